"""The bench's typed-columns cell: its two models, its bodies and its ratios (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench.cli import parser
from loadtests.bench.serving import Cell
from loadtests.bench.typed import (
    NUMERIC,
    TYPED,
    build_models,
    cpu_us_per_request,
    headline_verdicts,
    median_cpu_us,
    one_row_bodies,
    typed_ratios,
)
from loadtests.holdout import read_card


def test_ratios_compare_server_cpu_per_request() -> None:
    cell = Cell("typed-lists", NUMERIC, True, 1, requests=4000, rps=4000.0, server_cpu=0.8)
    assert cpu_us_per_request(cell) == pytest.approx(200.0)  # 0.8 CPU-s/s over 4000 req/s
    assert cpu_us_per_request(Cell("typed-lists", TYPED, True, 1)) is None
    slow = Cell("typed-lists", NUMERIC, True, 1, requests=1000, rps=1000.0, server_cpu=0.5)
    fast = Cell("typed-lists", NUMERIC, True, 1, requests=5000, rps=5000.0, server_cpu=0.9)
    # the median of each round's own figure (200, 500, 180 us): not the median-rps round's
    assert median_cpu_us([cell, slow, fast]) == pytest.approx(200.0)
    per_request = {
        (NUMERIC, "lists", 1): 200.0,
        (TYPED, "lists", 1): 300.0,
        (NUMERIC, "objects", 1): 250.0,
        (TYPED, "objects", 1): 400.0,
    }
    ratios = typed_ratios(per_request)
    assert list(ratios.values()) == pytest.approx([1.5, 1.6, 2.0])
    assert "(lists) over 23 numeric (lists) (target <= 1.5: the headline)" in next(iter(ratios))
    assert headline_verdicts({"ratios": ratios}) == ["c=1: 1.50x (target <= 1.5x: met)"]
    per_request[TYPED, "lists", 1] = 400.0
    assert headline_verdicts({"ratios": typed_ratios(per_request)}) == [
        "c=1: 2.00x (target <= 1.5x: MISSED)"
    ]


def test_the_two_models_have_the_same_width_and_pipeline(tmp_path: Path) -> None:
    build_models(tmp_path)
    typed, numeric = read_card(tmp_path, TYPED), read_card(tmp_path, NUMERIC)
    assert typed.input.layout == "columns" and numeric.input.layout == "matrix"
    assert typed.input.feature_names == numeric.input.feature_names
    kinds = [c.kind for c in typed.input.columns]
    assert kinds == ["categorical"] * 3 + ["numeric"] * 20
    assert numeric.input.numeric_only and numeric.input.n_features == 23
    assert typed.estimator == numeric.estimator
    # the same rows, the same fit: the same answers offline
    assert typed.metrics == numeric.metrics
    typed_row = json.loads(one_row_bodies(tmp_path, TYPED, "lists")[0])["instances"][0]
    numeric_row = json.loads(one_row_bodies(tmp_path, NUMERIC, "lists")[0])["instances"][0]
    assert [type(v) for v in typed_row[:4]] == [str, str, str, float]
    assert typed_row[3:] == numeric_row[3:] and all(isinstance(v, float) for v in numeric_row)
    named = json.loads(one_row_bodies(tmp_path, TYPED, "objects")[0])["instances"][0]
    assert list(named) == typed.input.feature_names and named["category"] == typed_row[0]


def test_bench_offers_the_typed_suite() -> None:
    assert parser().parse_args(["--suite", "typed", "--seconds", "2"]).suite == "typed"
