"""The serving suite's report: the open-loop tail of predict beside the floor's on one schedule."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from loadtests.bench.serving import Cell, _gc_text, gc_pauses, print_report, ratios


def _open(kind: str, p50: float, p99: float, p999: float, worst: float) -> Cell:
    cell = Cell(kind, "m", True, 1, requests=10_000, seconds=10.0, rps=1000.0, open_rate=1000.0)
    cell.p50_ms, cell.p99_ms, cell.p999_ms, cell.max_ms = p50, p99, p999, worst
    cell.notes.append(f"median p99.9 of 3 rounds ({p999:.2f}, {p999:.2f}, {p999:.2f} ms)")
    return cell


def _report(cells: list[Cell], ratios_: dict[str, Any]) -> dict[str, Any]:
    """What ``serving.run`` returns, for ``print_report``."""
    return {
        "loadgen": "python",
        "server_cpu": 0,
        "loadgen_cpu": 1,
        "seconds_per_cell": 2.0,
        "repeat": 3,
        "missing_models": [],
        "cells": [asdict(c) for c in cells],
        "ratios": ratios_,
    }


def test_ratios_give_predicts_tail_and_the_floors_on_the_same_schedule() -> None:
    cells = [_open("open", 0.2, 1.0, 4.0, 6.0), _open("open-floor", 0.1, 0.25, 2.0, 3.0)]
    out = ratios(cells)
    where = "m c=1 open loop at 1000 req/s"
    assert out[f"{where}: p99/p50 (target <= 3)"] == 5.0
    assert out[f"{where}: p99.9 ms (target <= 5)"] == 4.0
    assert out[f"{where}: max ms"] == 6.0
    assert out[f"{where}: floor-asgi p99/p50, p99.9 ms, max ms"] == (2.5, 2.0, 3.0)


def test_report_prints_both_tail_rows_after_the_closed_loop_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = Cell("predict", "m", True, 1, rps=2000.0, p50_ms=0.2, p99_ms=0.5, server_cpu=0.6)
    closed.notes.append("median of 3 rounds (2000, 2000, 2000 req/s)")
    cells = [_open("open", 0.2, 1.0, 4.0, 6.0), closed, _open("open-floor", 0.1, 0.25, 2.0, 3.0)]
    print_report(_report(cells, ratios(cells)))
    out = capsys.readouterr().out
    table = [line.split()[0] for line in out.splitlines() if line.startswith(("open", "predict"))]
    assert table == ["open", "predict", "open-floor"]
    rounds = out.split("rounds (req/s of each round, in order):")[1].split("ratios:")[0]
    kinds = [line.split()[0] for line in rounds.strip().splitlines()]
    assert kinds == ["predict", "open", "open-floor"]
    assert "floor-asgi p99/p50, p99.9 ms, max ms: (2.5, 2.0, 3.0)" in out


def test_gc_pauses_reads_collections_and_the_longest_bucket_from_a_difference() -> None:
    name = "tabserve_gc_pause_seconds_bucket"

    def bucket(generation: str, le: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return (name, frozenset({("generation", generation), ("le", le)}))

    # Young: 3 collections, all under 0.5 ms; full: 1, between 10 and 20 ms (cumulative counts).
    delta = {
        bucket("0", "0.0005"): 3.0,
        bucket("0", "0.02"): 3.0,
        bucket("0", "+Inf"): 3.0,
        bucket("2", "0.0005"): 0.0,
        bucket("2", "0.01"): 0.0,
        bucket("2", "0.02"): 1.0,
        bucket("2", "+Inf"): 1.0,
        ("tabserve_gc_pause_seconds_count", frozenset({("generation", "0")})): 3.0,
        ("tabserve_gc_pause_seconds_count", frozenset({("generation", "2")})): 1.0,
    }
    assert gc_pauses(delta) == (4, 20.0)
    assert gc_pauses({bucket("0", "0.02"): 0.0, bucket("0", "+Inf"): 0.0}) == (0, 0.0)
    assert gc_pauses({}) == (0, 0.0)


def test_report_prints_the_longest_collection_per_cell_and_per_open_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rounds = [_open("open", 0.2, 1.0, p999, 6.0) for p999 in (3.0, 4.0, 9.0)]
    for cell, (n, longest) in zip(rounds, [(2, 0.5), (0, 0.0), (1, 50.0)], strict=True):
        cell.gc_collections, cell.gc_longest_ms = n, longest
    shown = rounds[1]
    shown.notes.append("gc per round: " + "; ".join(_gc_text(c) for c in rounds))
    print_report(_report([rounds[0], shown], {}))
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("what"))
    before = header.split()[: header.split().index("gc")]
    column = len(before) - before.count("ms")  # "p50 ms" and the like: one column, two tokens
    table = [line.split() for line in out.splitlines() if line.startswith("open")]
    assert [row[column] for row in table] == ["0.5", "-"]
    assert "gc per round: 2, longest <= 0.5 ms; none; 1, longest <= 50 ms" in out
