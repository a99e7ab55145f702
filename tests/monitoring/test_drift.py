"""Input and prediction drift through ModelMonitor.observe and snapshot."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from export.data import SHIFTED_FEATURES, make_fraud
from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams
from tests.monitoring.cards import class_scores, fake_fraud_scores
from tests.monitoring.conftest import FakeClock

PARAMS = MonitorParams(drift_window_rows=5_000, drift_window_s=600.0, drift_min_rows=500)


def serve(monitor: ModelMonitor, X: np.ndarray, names: list[str], batch: int = 64) -> None:
    """Feed rows to the monitor the way the batcher does: per batch, one request per row."""
    scores = class_scores(fake_fraud_scores(X, names))
    for start in range(0, len(X), batch):
        rows = X[start : start + batch]
        requests = [(f"r{start + i}", 0, 1) for i in range(len(rows))]
        monitor.observe(rows, scores[start : start + batch], requests)


def statuses(snapshot: dict) -> dict[str, str]:
    return {f["name"]: f["status"] for f in snapshot["features"]}


def test_unshifted_traffic_stays_below_watch(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, PARAMS, clock=clock)
    X, _, names = make_fraud(5_000, seed=11)
    serve(monitor, X, names)
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 5_000
    assert snap["status"] == "ok"
    assert max(f["psi"] for f in snap["features"]) < PARAMS.psi_watch
    assert set(statuses(snap).values()) == {"ok"}
    assert snap["scores"]["psi"] < PARAMS.psi_watch
    assert snap["scores"]["status"] == "ok"


def test_shifted_traffic_drifts_on_exactly_the_shifted_features(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    monitor = ModelMonitor(fraud_card, PARAMS, clock=clock)
    X, _, names = make_fraud(5_000, seed=12, shift=1.0)
    serve(monitor, X, names)
    snap = monitor.snapshot()
    by_name = {f["name"]: f for f in snap["features"]}
    drifting = {name for name, f in by_name.items() if f["status"] == "drift"}
    assert drifting == set(SHIFTED_FEATURES)
    for name, f in by_name.items():
        if name not in SHIFTED_FEATURES:
            assert f["psi"] < PARAMS.psi_watch, name
        else:
            assert f["psi"] > PARAMS.psi_drift, name
            assert f["ks_pvalue"] < 1e-6, name
    assert snap["status"] == "drift"
    assert {f["name"] for f in snap["top_drifting"][:4]} == set(SHIFTED_FEATURES)
    psis = [f["psi"] for f in snap["top_drifting"]]
    assert psis == sorted(psis, reverse=True)


def test_score_drift_and_positive_rate(fraud_card: ModelCard, clock: FakeClock) -> None:
    ref = fraud_card.reference
    calm = ModelMonitor(fraud_card, PARAMS, clock=clock)
    X, _, names = make_fraud(5_000, seed=13)
    serve(calm, X, names)
    calm_scores = calm.snapshot()["scores"]
    assert calm_scores["positive_rate"] == pytest.approx(ref.predicted_positive_rate, abs=0.01)
    assert calm_scores["reference_positive_rate"] == ref.predicted_positive_rate
    assert calm_scores["base_rate"] == ref.base_rate

    shifted = ModelMonitor(fraud_card, PARAMS, clock=clock)
    Xs, _, _ = make_fraud(5_000, seed=13, shift=1.0)
    serve(shifted, Xs, names)
    drifted = shifted.snapshot()["scores"]
    assert drifted["psi"] > PARAMS.psi_drift
    assert drifted["status"] == "drift"
    assert drifted["positive_rate"] > 3 * ref.predicted_positive_rate


def test_no_status_below_min_rows(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, PARAMS, clock=clock)
    assert monitor.snapshot()["status"] == "insufficient_data"
    assert monitor.snapshot()["features"][0]["psi"] is None
    X, _, names = make_fraud(499, seed=14, shift=1.0)
    serve(monitor, X, names)
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 499
    assert snap["status"] == "insufficient_data"
    assert set(statuses(snap).values()) == {"insufficient_data"}
    assert snap["features"][0]["psi"] is not None  # numbers are shown, status is withheld


def test_window_expires_by_count(fraud_card: ModelCard, clock: FakeClock) -> None:
    params = MonitorParams(drift_window_rows=1_000, drift_min_rows=500)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    X, _, names = make_fraud(1_000, seed=15, shift=1.0)
    serve(monitor, X, names)
    assert monitor.snapshot()["status"] == "drift"
    X, _, names = make_fraud(1_000, seed=16)
    serve(monitor, X, names)  # the shifted rows are pushed out
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 1_000
    assert snap["status"] in {"ok", "watch"}
    assert snap["observed"]["rows_total"] == 2_000


def test_window_expires_by_time(fraud_card: ModelCard, clock: FakeClock) -> None:
    params = MonitorParams(drift_window_s=60.0, drift_min_rows=500)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    X, _, names = make_fraud(1_000, seed=17, shift=1.0)
    serve(monitor, X, names)
    clock.advance(30.0)
    snap = monitor.snapshot()
    assert snap["window"] == {
        "rows": 1_000,
        "seconds": 30.0,
        "max_rows": params.drift_window_rows,
        "max_seconds": 60.0,
        "min_rows": 500,
    }
    assert snap["status"] == "drift"
    X, _, names = make_fraud(600, seed=18)
    serve(monitor, X, names)
    clock.advance(31.0)  # the shifted rows are now 61 s old; the calm ones 31 s
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == 600
    assert snap["status"] in {"ok", "watch"}
    clock.advance(30.0)
    assert monitor.snapshot()["window"]["rows"] == 0
    assert monitor.snapshot()["status"] == "insufficient_data"


def test_logs_once_when_entering_and_leaving_drift(
    fraud_card: ModelCard, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    params = MonitorParams(drift_window_rows=1_000, drift_min_rows=500, status_interval_s=1.0)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    caplog.set_level(logging.INFO, logger="server.monitoring")
    X, _, names = make_fraud(3_000, seed=19, shift=1.0)
    scores = class_scores(fake_fraud_scores(X, names))
    for start in range(0, 3_000, 100):  # 30 batches, 2 s apart: many status checks
        clock.advance(2.0)
        monitor.observe(X[start : start + 100], scores[start : start + 100], [("r", 0, 100)])
    entered = [r for r in caplog.records if "entered drift" in r.getMessage()]
    assert len(entered) == 1
    assert entered[0].levelno == logging.WARNING
    assert "merchant_risk_score" in entered[0].getMessage()
    assert monitor.status == "drift"

    X, _, names = make_fraud(2_000, seed=20)
    scores = class_scores(fake_fraud_scores(X, names))
    for start in range(0, 2_000, 100):
        clock.advance(2.0)
        monitor.observe(X[start : start + 100], scores[start : start + 100], [("r", 0, 100)])
    monitor.snapshot()
    left = [r for r in caplog.records if "left drift" in r.getMessage()]
    assert len(left) == 1
    assert left[0].levelno == logging.INFO
    assert len([r for r in caplog.records if "entered drift" in r.getMessage()]) == 1
