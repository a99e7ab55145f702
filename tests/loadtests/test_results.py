"""Aggregation: cell records, per-model accuracy under load, the Pareto frontier."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from loadtests.results import (
    cell_record,
    dominates,
    model_accuracy,
    pareto_front,
    pareto_models,
    read_locust_stats,
    tradeoff_points,
)


def test_pareto_front_on_fixed_points() -> None:
    points = {
        "a": (1.0, 0.50),
        "b": (2.0, 0.60),
        "c": (3.0, 0.55),  # dominated by b
        "d": (0.5, 0.30),
        "e": (2.0, 0.60),  # ties b exactly: neither dominates the other
        "f": (1.0, 0.45),  # dominated by a (same latency, less accurate)
        "g": (math.nan, 0.9),  # left out
    }
    assert pareto_front(points) == ["d", "a", "b", "e"]
    assert dominates((1.0, 0.5), (1.0, 0.4)) and not dominates((1.0, 0.5), (1.0, 0.5))
    assert pareto_front({}) == []


def test_pareto_models_per_dataset_and_concurrency(results_doc: dict[str, Any]) -> None:
    fronts = pareto_models(results_doc["cells"])
    assert fronts[("fraud", 1)] == ["fast_ok", "slow_good"]
    assert fronts[("fraud", 16)] == ["fast_ok", "slow_good"]
    assert fronts[("cancer", 1)] == ["cancer"]
    points = tradeoff_points(results_doc["cells"])
    # accuracy comes from the full-coverage batch cell, latency from the one-row cell
    assert points[("fraud", 16)]["slow_good"] == (9.0, 0.61)


def test_model_accuracy_uses_the_cell_with_most_rows(results_doc: dict[str, Any]) -> None:
    acc = model_accuracy(results_doc["cells"], "slow_good")
    assert acc is not None
    assert acc["pr_auc"] == 0.61 and acc["coverage"] == 1.0 and acc["rows"] == 1000
    assert model_accuracy(results_doc["cells"], "unknown") is None


def test_cell_record_flattens_the_locustfile_output() -> None:
    cell = {"cell_id": "x", "model": "m", "stream": "m", "group": "models"}
    doc = {
        "duration_s": 8.0,
        "total": {
            "requests": 100,
            "ok": 99,
            "error_rate": 0.01,
            "rate_503": 0.01,
            "throughput_rps": 12.5,
            "latency_ms": {"p99": 3.0},
        },
        "streams": {
            "m": {
                "accuracy": {"pr_auc": 0.5},
                "distinct_rows": 50,
                "replay_rows": 200,
                "max_repeat_diff": 0.0,
                "offline": {"pr_auc": 0.5},
                "dataset": "fraud",
            }
        },
    }
    record = cell_record(cell, doc, {"p99": 3.0}, {"mean_batch_rows": 2.0}, {"server_pct": 50.0})
    assert record["throughput_rps"] == 12.5 and record["coverage"] == 0.25
    assert record["accuracy"] == {"pr_auc": 0.5} and record["server"]["mean_batch_rows"] == 2.0
    assert "failed" not in record
    assert cell_record(cell, None, None, None, None)["failed"]


def test_read_locust_stats(tmp_path: Path) -> None:
    (tmp_path / "run_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Requests/s,50%,95%,99%\n"
        "POST,one-row m,10,1,1,5.0,1,2,3\n"
        ",Aggregated,10,1,1,5.0,1,2,4\n"
    )
    stats = read_locust_stats(tmp_path / "run")
    assert stats == {
        "requests": 10.0,
        "failures": 1.0,
        "rps": 5.0,
        "p50": 1.0,
        "p95": 2.0,
        "p99": 4.0,
    }
    assert read_locust_stats(tmp_path / "missing") is None
