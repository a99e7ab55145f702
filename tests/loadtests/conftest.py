"""Fixed inputs for the load-test tooling: a small replay set, typed models, a sweep's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtests.holdout import ReplaySet, encode_rows
from loadtests.typed_models import Layout, build_shop_model
from server.modelcard import Task

TYPED_MODELS: dict[str, tuple[Task, Layout]] = {
    "shop_regression": ("regression", "columns"),
    "shop_multiclass": ("multiclass", "columns"),
    "shop_binary_codes": ("binary", "matrix"),
}
"""Models with string columns (built by ``loadtests.typed_models``), and a numeric one."""


@pytest.fixture(scope="session")
def typed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository of small sklearn pipelines: a regressor and a multiclass classifier
    over 3 string + 4 numeric columns (one ONNX input per column), and a binary classifier over
    the same 7 columns as numbers (category codes)."""
    repo = tmp_path_factory.mktemp("typed-models")
    for name, (task, layout) in TYPED_MODELS.items():
        build_shop_model(repo, name, task=task, layout=layout, n_rows=1_200, n_numeric=4)
    return repo


@pytest.fixture
def replay() -> ReplaySet:
    rng = np.random.default_rng(3)
    X = rng.lognormal(size=(50, 4)).astype(np.float32)
    X[:, 3] = (rng.random(50) < 0.5).astype(np.float32)  # a binary column
    y = (rng.random(50) < 0.3).astype(np.int64)
    return ReplaySet(
        model="toy",
        version=1,
        dataset="toy",
        X=X,
        y=y,
        row_json=encode_rows(X),
        threshold=0.5,
        positive_class=1,
        feature_names=["a", "b", "c", "d"],
        offline={"pr_auc": 0.5},
    )


def _cell(
    model: str,
    group: str,
    users: int,
    p99: float,
    rps: float,
    pr_auc: float | None = None,
    rows: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_id": f"{group}-{model}-u{users}",
        "group": group,
        "model": model,
        "scenario": extra.pop("scenario", "SteadyOneRow"),
        "users": users,
        "server_label": "batching 0 ms, cache off",
        "target_rps": extra.pop("target_rps", None),
        "throughput_rps": rps,
        "rows_per_s": rps,
        "error_rate": extra.pop("error_rate", 0.0),
        "rate_503": 0.0,
        "latency_ms": {
            "p50": p99 / 3,
            "p90": p99 / 2,
            "p95": p99 / 1.5,
            "p99": p99,
            "p99.9": p99 * 2,
        },
        "locust": {"p99": round(p99)},
        "dataset": extra.pop("dataset", "fraud"),
        "offline": {
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "pr_auc": pr_auc or 0.0,
            "roc_auc": 0.9,
        },
        "server": {"mean_batch_rows": 1.5, "queue_wait_mean_ms": 0.01, "hit_ratio": None},
        "cpu": {"server_pct": 90.0, "locust_pct": 60.0},
        "distinct_rows": rows,
        "replay_rows": 1000,
        "coverage": rows / 1000,
        "max_repeat_diff": 0.0,
    }
    if pr_auc is not None:
        cell["accuracy"] = {
            "precision": 0.5,
            "recall": 0.5,
            "f1": 0.5,
            "pr_auc": pr_auc,
            "roc_auc": 0.9,
            "rows": rows,
            "positives": rows // 40,
            "threshold": 0.3,
        }
    cell.update(extra)
    return cell


@pytest.fixture
def results_doc() -> dict[str, Any]:
    """Three fraud models and one cancer model; 'slow_good' and 'fast_ok' are on the frontier."""
    cells = [
        # model cells: (p99 ms, rps) at 1 and 16 users; accuracy from the batch cells below.
        _cell("fast_ok", "models", 1, 0.5, 2000, 0.40, rows=300),
        _cell("fast_ok", "models", 16, 2.0, 6000, 0.40, rows=900),
        _cell("slow_good", "models", 1, 2.0, 500, 0.60, rows=200),
        _cell("slow_good", "models", 16, 9.0, 1500, 0.60, rows=800),
        _cell("dominated", "models", 1, 3.0, 400, 0.35, rows=100),
        _cell("dominated", "models", 16, 12.0, 1000, 0.35, rows=700),
        _cell("cancer", "models", 1, 0.4, 2100, 0.99, rows=100, dataset="cancer"),
        _cell("fast_ok", "accuracy", 2, 5.0, 100, 0.41, rows=1000, scenario="BatchRows"),
        _cell("slow_good", "accuracy", 2, 9.0, 50, 0.61, rows=1000, scenario="BatchRows"),
        _cell("dominated", "accuracy", 2, 9.0, 50, 0.33, rows=1000, scenario="BatchRows"),
        _cell(
            "cancer", "accuracy", 2, 1.0, 50, 0.99, rows=114, scenario="BatchRows", dataset="cancer"
        ),
        _cell("slow_good", "batching", 32, 20.0, 1600, None, server_label="no batching"),
        _cell(
            "slow_good",
            "cache",
            16,
            1.0,
            3000,
            None,
            scenario="ZipfRepeated",
            server={"hit_ratio": 0.8, "cache_hits": {"memory": 800.0}},
        ),
        _cell("fast_ok", "budget", 10, 1.5, 498, 0.40, rows=300, target_rps=500.0),
        _cell("slow_good", "budget", 10, 4.0, 470, 0.60, rows=300, target_rps=500.0),
        {
            "cell_id": "spike-x",
            "group": "spike",
            "model": "slow_good",
            "failed": "RuntimeError: boom",
        },
    ]
    return {
        "meta": {
            "mode": "quick",
            "started_at": "2026-01-01 00:00 UTC",
            "elapsed_s": 120.0,
            "cell_seconds": 8,
            "server_cpus": "0",
            "client_cpus": "1",
            "budget": None,
        },
        "models": {},
        "cells": cells,
    }


def _task_cell(
    model: str,
    group: str,
    users: int,
    p99: float,
    rps: float,
    task: str,
    accuracy: dict[str, Any],
    offline: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    cell = _cell(model, group, users, p99, rps, 0.5, rows=accuracy["rows"], **extra)
    cell.update(
        task=task,
        dataset=f"shop-{task}",
        accuracy=accuracy | {"task": task},
        offline=offline | {"task": task},
        row_form="objects",
    )
    return cell


def _regression(mae: float, rows: int = 750) -> dict[str, Any]:
    return {"rows": rows, "mae": mae, "rmse": mae * 1.3, "r2": 0.9, "mape": 0.1, "bias": 0.2}


def _multiclass(macro_f1: float, rows: int = 600) -> dict[str, Any]:
    return {"rows": rows, "accuracy": macro_f1 + 0.05, "macro_f1": macro_f1, "weighted_f1": 0.7}


@pytest.fixture
def mixed_doc(results_doc: dict[str, Any]) -> dict[str, Any]:
    """The fraud models plus two regressors and two multiclass classifiers."""
    pricing = {"mae": 0.0, "rmse": 0.0, "r2": 0.9, "baseline_mae": 30.0}
    returns = {"accuracy": 0.7, "macro_f1": 0.0, "baseline_accuracy": 0.4, "log_loss": 0.6}
    results_doc["cells"] += [
        # pricing_xgb has the lower MAE and fits the budget: it is the one to deploy
        _task_cell(
            "pricing_sklearn",
            "models",
            1,
            0.6,
            1800,
            "regression",
            _regression(5.2),
            pricing | {"mae": 5.1},
        ),
        _task_cell(
            "pricing_xgb",
            "models",
            1,
            1.2,
            900,
            "regression",
            _regression(4.0),
            pricing | {"mae": 4.0},
        ),
        _task_cell(
            "pricing_sklearn",
            "models",
            16,
            1.6,
            5000,
            "regression",
            _regression(5.2),
            pricing | {"mae": 5.1},
        ),
        _task_cell(
            "pricing_xgb",
            "models",
            16,
            3.5,
            2500,
            "regression",
            _regression(4.0),
            pricing | {"mae": 4.0},
        ),
        # returns_xgb is more accurate but too slow for p99 <= 5 ms
        _task_cell(
            "returns_sklearn",
            "models",
            1,
            0.7,
            1500,
            "multiclass",
            _multiclass(0.61),
            returns | {"macro_f1": 0.6},
        ),
        _task_cell(
            "returns_xgb",
            "models",
            1,
            9.0,
            300,
            "multiclass",
            _multiclass(0.72),
            returns | {"macro_f1": 0.72},
        ),
    ]
    return results_doc
