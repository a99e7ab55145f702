"""observe buffers batches and folds them in later: reads see exactly what unbuffered ones would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export.data import make_fraud
from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams
from tests.monitoring.cards import class_scores, fake_fraud_scores
from tests.monitoring.conftest import FakeClock


def test_buffered_reads_equal_unbuffered(fraud_card: ModelCard, clock: FakeClock) -> None:
    params = MonitorParams(drift_window_rows=5_000, drift_window_s=30.0, drift_min_rows=100)
    buffered = ModelMonitor(fraud_card, params, clock=clock)  # folds every 256 rows
    eager = ModelMonitor(fraud_card, replace(params, fold_rows=1), clock=clock)
    X, _, names = make_fraud(3_000, seed=21, shift=0.5)
    scores = class_scores(fake_fraud_scores(X, names))
    rng = np.random.default_rng(0)
    start, step = 0, 0
    while start < len(X):
        n = int(rng.integers(0, 40))
        rows, sc = X[start : start + n], scores[start : start + n]
        requests = [(f"r{start + i}", 0, 1) for i in range(len(rows))]
        for monitor in (buffered, eager):
            monitor.observe(rows, sc, requests)
        start += n
        step += 1
        clock.advance(0.5)  # over ~75 s: rows leave the 30 s window while others are pending
        if step % 37 == 0:
            assert buffered.snapshot() == eager.snapshot()
    assert buffered.snapshot() == eager.snapshot()
    for monitor in (buffered, eager):
        monitor.feedback(request_id=f"r{len(X) - 1}", row=0, label=1)  # a row still pending
    assert buffered.snapshot() == eager.snapshot()
    assert buffered.snapshot()["quality"]["labels"] == 1
    assert 0 < buffered.snapshot()["window"]["rows"] < len(X) / 2  # time did expire rows


def test_pending_rows_expire_by_their_arrival_time(fraud_card: ModelCard, clock: FakeClock) -> None:
    params = MonitorParams(drift_window_s=60.0, fold_rows=10_000, status_interval_s=1e9)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    X, _, names = make_fraud(30, seed=22)
    scores = class_scores(fake_fraud_scores(X, names))
    monitor.observe(X[:10], scores[:10], [("early", 0, 10)])
    clock.advance(50.0)
    monitor.observe(X[10:], scores[10:], [("late", 0, 20)])
    clock.advance(20.0)  # "early" is 70 s old, "late" 20 s: neither was folded before this read
    window = monitor.snapshot()["window"]
    assert window["rows"] == 20
    assert window["seconds"] == 20.0
    assert monitor.snapshot()["observed"]["rows_total"] == 30
