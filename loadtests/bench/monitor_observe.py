"""Cost of ModelMonitor.observe per row at batch 1, 16 and 64, and of a snapshot.

Run: ``.venv/bin/python -m loadtests.bench.monitor_observe``. Not a test (timings on a shared
machine are noisy); prints medians over repeated rounds, of wall time and of this thread's CPU
time (less disturbed by other processes on a busy machine). ``observe`` buffers batches and
folds them into the window every ``fold_rows`` rows, so the rounds are long enough to include
many folds, and the per-row cost is the amortised one.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from numpy.typing import NDArray

from export.data import make_fraud
from export.reference import reference_stats
from server.modelcard import Column, placeholder_card
from server.monitoring import ModelMonitor, MonitorParams, row_hash


def fake_scores(X: NDArray[np.float32], feature_names: list[str]) -> NDArray[np.float64]:
    """A stand-in model: a logistic score of three of the fraud features."""
    col = {name: X[:, j].astype(np.float64) for j, name in enumerate(feature_names)}
    z = (
        -4.0
        + 6.0 * col["merchant_risk_score"]
        + 0.5 * np.log1p(col["distance_from_home_km"])
        + 3.0 * col["ip_risk_score"]
    )
    return 1.0 / (1.0 + np.exp(-z))


def main() -> None:
    X, y, names = make_fraud(20_000, seed=0)
    scores = fake_scores(X, names)
    threshold = float(np.quantile(scores, 0.97))
    card = placeholder_card(
        "fraud",
        1,
        feature_names=names,
        threshold=threshold,
        reference=reference_stats(
            [Column(name=n) for n in names],
            X,
            y,
            np.column_stack([1.0 - scores, scores]),
            "binary",
            [0, 1],
            threshold,
        ),
    )
    live, _, _ = make_fraud(64 * 2_000, seed=1, shift=0.5)
    p = fake_scores(live, names).astype(np.float32)
    live_scores = np.column_stack([1.0 - p, p]).astype(np.float32)
    print(f"{len(names)} features; default window 5,000 rows, feedback memory 100,000 rows")
    for batch in (1, 16, 64):
        monitor = ModelMonitor(card, MonitorParams())
        calls = 20_000 if batch == 1 else 2_000
        batches = [
            (
                live[(i * batch) % len(live) : (i * batch) % len(live) + batch],
                live_scores[(i * batch) % len(live) : (i * batch) % len(live) + batch],
                [(f"req-{i}-{k}", 0, 1) for k in range(batch)],
            )
            for i in range(calls)
        ]
        rounds, cpu_rounds = [], []
        for r in range(5):
            start, cpu_start = time.perf_counter_ns(), time.thread_time_ns()
            for rows, sc, requests in batches[r * calls // 5 : (r + 1) * calls // 5]:
                monitor.observe(rows, sc, requests)
            cpu = time.thread_time_ns() - cpu_start
            elapsed = time.perf_counter_ns() - start
            rounds.append(elapsed / (calls // 5) / 1_000)
            cpu_rounds.append(cpu / (calls // 5) / 1_000)
        per_call, cpu_per_call = statistics.median(rounds), statistics.median(cpu_rounds)
        print(
            f"batch {batch:>2}: {per_call:7.1f} us per observe call, "
            f"{per_call / batch:6.2f} us per row wall, {cpu_per_call / batch:6.2f} us per row CPU "
            f"(medians of 5 rounds; min wall {min(rounds) / batch:.2f})"
        )
    times = []
    for _ in range(50):
        start = time.perf_counter_ns()
        monitor.snapshot()
        times.append((time.perf_counter_ns() - start) / 1_000)
    print(f"snapshot: {statistics.median(times):.0f} us (median of 50)")
    last_rows = batches[-1][0]
    start = time.perf_counter_ns()
    monitor.feedback(row_hash=row_hash(last_rows[0]), label=1)
    first = (time.perf_counter_ns() - start) / 1e6
    start = time.perf_counter_ns()
    monitor.feedback(row_hash=row_hash(last_rows[1]), label=0)
    second = (time.perf_counter_ns() - start) / 1e3
    print(f"first feedback by hash (hashes the 100,000 remembered rows): {first:.0f} ms")
    print(f"next feedback by hash: {second:.0f} us")
    start = time.perf_counter_ns()
    monitor.feedback(request_id="req-1999-5", row=0, label=1)
    print(f"feedback by request id: {(time.perf_counter_ns() - start) / 1e3:.0f} us")


if __name__ == "__main__":
    main()
