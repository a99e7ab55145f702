"""The collector exports snapshot numbers at scrape time on the registry it is given."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from export.data import make_fraud
from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams, register_monitoring_metrics
from tests.monitoring.cards import class_scores, fake_fraud_scores
from tests.monitoring.conftest import FakeClock


def test_gauges_match_the_snapshot(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, MonitorParams(drift_min_rows=500), clock=clock)
    X, _, names = make_fraud(1_000, seed=21, shift=1.0)
    monitor.observe(X, class_scores(fake_fraud_scores(X, names)), [("r", 0, 1_000)])
    monitor.feedback(request_id="r", row=0, label=1)
    monitors = [monitor]
    registry = CollectorRegistry()
    register_monitoring_metrics(registry, lambda: monitors)
    snap = monitor.snapshot()
    labels = {"model": "fraud", "version": "1"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    psi = value("tabserve_drift_feature_psi", feature="merchant_risk_score")
    expected = next(f["psi"] for f in snap["features"] if f["name"] == "merchant_risk_score")
    assert psi == expected
    assert value("tabserve_drift_status") == 2.0
    assert value("tabserve_drift_window_rows") == 1_000.0
    assert value("tabserve_drift_score_psi") == snap["scores"]["psi"]
    assert value("tabserve_positive_rate", source="live") == snap["scores"]["positive_rate"]
    assert value("tabserve_positive_rate", source="reference") == (
        fraud_card.reference.predicted_positive_rate
    )
    assert value("tabserve_live_labels") == 1.0
    assert value("tabserve_live_quality", metric="recall") == snap["quality"]["recall"]
    precision = value("tabserve_live_quality", metric="precision")
    assert precision is not None
    assert math.isnan(precision) == (snap["quality"]["precision"] is None)
    text = generate_latest(registry).decode()
    assert 'tabserve_drift_feature_psi{feature="amount",model="fraud",version="1"}' in text


def test_registration_takes_no_snapshot_and_follows_the_model_set(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    monitors: list[ModelMonitor] = []
    registry = CollectorRegistry()
    register_monitoring_metrics(registry, lambda: monitors)
    assert (
        registry.get_sample_value("tabserve_drift_status", {"model": "fraud", "version": "1"})
        is None
    )
    monitors.append(ModelMonitor(fraud_card, clock=clock))
    status = registry.get_sample_value("tabserve_drift_status", {"model": "fraud", "version": "1"})
    assert status == -1.0
    rows = np.zeros((1, fraud_card.input.n_features), dtype=np.float32)
    monitors[0].observe(rows, class_scores(np.array([0.5])), [("a", 0, 1)])
    assert (
        registry.get_sample_value("tabserve_drift_window_rows", {"model": "fraud", "version": "1"})
        == 1.0
    )
