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
    one_row_bodies,
    typed_ratios,
)
from loadtests.holdout import read_card


def _cell(model: str, form: str, c: int, rps: float, server_cpu: float) -> Cell:
    return Cell(f"typed-{form}", model, True, c, requests=int(rps), rps=rps, server_cpu=server_cpu)


def test_ratios_compare_server_cpu_per_request() -> None:
    cells = [
        _cell(NUMERIC, "lists", 1, 4000, 0.8),  # 200 us per request
        _cell(TYPED, "lists", 1, 2500, 0.75),  # 300 us
        _cell(NUMERIC, "objects", 1, 3000, 0.75),  # 250 us
        _cell(TYPED, "objects", 1, 2000, 0.8),  # 400 us
    ]
    assert cpu_us_per_request(cells[0]) == pytest.approx(200.0)
    ratios = typed_ratios(cells)
    values = list(ratios.values())
    assert values == pytest.approx([1.5, 1.6, 2.0])
    assert "(lists) over 23 numeric (lists) (target <= 1.5: the headline)" in next(iter(ratios))
    report = {"ratios": ratios}
    assert headline_verdicts(report) == ["c=1: 1.50x (target <= 1.5x: met)"]
    cells[1] = _cell(TYPED, "lists", 1, 2000, 0.8)
    assert headline_verdicts({"ratios": typed_ratios(cells)}) == [
        "c=1: 2.00x (target <= 1.5x: MISSED)"
    ]
    assert cpu_us_per_request(Cell("typed-lists", TYPED, True, 1)) is None


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
