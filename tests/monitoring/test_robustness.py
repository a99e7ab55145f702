"""observe never raises: bad input is logged once and counted; the snapshot shape is stable."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest

from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams
from server.settings import Settings
from tests.monitoring.cards import class_scores
from tests.monitoring.conftest import FakeClock


def test_nan_rows_go_to_the_missing_slot(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, MonitorParams(drift_min_rows=10), clock=clock)
    rows = np.full((20, fraud_card.input.n_features), np.nan, dtype=np.float32)
    scores = class_scores(np.full(20, np.nan))
    monitor.observe(rows, scores, [("a", 0, 20)])
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 20
    assert all(f["missing_rate"] == 1.0 for f in snap["features"])
    assert snap["status"] == "drift"  # the reference had no missing values
    assert snap["scores"]["positive_rate"] is None
    assert snap["observed"]["errors"] == 0


def test_infinite_values_are_binned(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, clock=clock)
    rows = np.full((2, fraud_card.input.n_features), np.inf, dtype=np.float32)
    rows[1] = -np.inf
    monitor.observe(rows, class_scores(np.array([1.0, 0.0])), [("a", 0, 2)])
    assert monitor.snapshot()["window"]["rows"] == 2


@pytest.mark.parametrize(
    ("rows", "scores", "requests"),
    [
        (np.zeros((0, 24), np.float32), np.zeros((0, 2), np.float32), []),  # empty batch
        (np.zeros((3, 5), np.float32), np.zeros((3, 2), np.float32), [("a", 0, 3)]),  # wrong width
        (np.zeros(24, np.float32), np.zeros(2, np.float32), [("a", 0, 1)]),  # 1-d
        (np.zeros((3, 24), np.float32), np.zeros((3, 3), np.float32), [("a", 0, 3)]),  # classes
        (np.zeros((3, 24), np.float32), np.zeros((2, 2), np.float32), [("a", 0, 3)]),  # row count
        (None, None, None),  # not arrays at all
        ([["x"] * 24], [[0.1, 0.9]], [("a", 0, 1)]),  # strings
    ],
)
def test_observe_never_raises(
    fraud_card: ModelCard, clock: FakeClock, rows: Any, scores: Any, requests: Any
) -> None:
    monitor = ModelMonitor(fraud_card, clock=clock)
    monitor.observe(rows, scores, requests)
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 0
    # And the monitor keeps working afterwards.
    good = np.zeros((4, fraud_card.input.n_features), dtype=np.float32)
    monitor.observe(good, class_scores(np.full(4, 0.5)), [("b", 0, 4)])
    assert monitor.snapshot()["window"]["rows"] == 4


def test_problems_are_logged_once_and_counted(
    fraud_card: ModelCard, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = ModelMonitor(fraud_card, clock=clock)
    caplog.set_level(logging.WARNING, logger="server.monitoring")
    bad = np.zeros((3, 5), dtype=np.float32)
    for _ in range(10):
        monitor.observe(bad, np.zeros((3, 2), np.float32), [("a", 0, 3)])
        monitor.observe(None, None, None)  # type: ignore[arg-type]
    rows = np.zeros((3, fraud_card.input.n_features), dtype=np.float32)
    for _ in range(10):  # request counts that do not add up: binned, not remembered
        monitor.observe(rows, class_scores(np.full(3, 0.5)), [("a", 0, 2)])
    observed = monitor.snapshot()["observed"]
    assert observed["rejected_batches"] == 20
    assert observed["feedback_skipped_batches"] == 10
    assert observed["batches_total"] == 10
    # One line per kind of problem (bad rows, request counts), however often it recurs.
    assert len(caplog.records) == 2


def test_snapshot_shape_is_json_ready(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, Settings(), clock=clock, wall_clock=lambda: 1.8e9)
    rows = np.ones((3, fraud_card.input.n_features), dtype=np.float32)
    monitor.observe(rows, class_scores(np.full(3, 0.9)), [("a", 0, 3)])
    monitor.feedback(request_id="a", row=1, label=1)
    snap = monitor.snapshot()
    json.dumps(snap, allow_nan=False)
    assert list(snap) == [
        "model",
        "version",
        "task",
        "status",
        "status_since",
        "since",
        "window",
        "thresholds",
        "features",
        "top_drifting",
        "scores",
        "quality",
        "observed",
    ]
    assert snap["since"] == "2027-01-15T08:00:00+00:00"
    assert [f["name"] for f in snap["features"]] == fraud_card.input.feature_names
    assert set(snap["features"][0]) == {
        "name",
        "kind",
        "psi",
        "ks",
        "ks_pvalue",
        "missing_rate",
        "status",
    }
    assert set(snap["scores"]) == {
        "of",
        "psi",
        "status",
        "ks",
        "positive_rate",
        "reference_positive_rate",
        "base_rate",
    }
    assert snap["thresholds"] == {
        "psi_watch": 0.1,
        "psi_drift": 0.25,
        "min_rows": 500,
        "decision_threshold": fraud_card.threshold,
    }
    assert len(snap["top_drifting"]) == 5
    assert snap["quality"]["labels"] == 1
