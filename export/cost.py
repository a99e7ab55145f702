"""Inference cost in ONNX Runtime, single-threaded, measured at export time."""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from export.onnx_export import Exported, session
from server.modelcard import Cost


def _median_call_us(run: object, budget_s: float, min_calls: int) -> float:
    assert callable(run)
    for _ in range(3):  # warm-up
        run()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1000.0)
        if len(times) >= 20_000:
            break
    return float(np.median(times))


def measure_cost(exported: Exported, X: NDArray[np.float32], budget_s: float = 0.4) -> Cost:
    """Median µs per call at batch 1 and µs per row at batches 64 and 512, on real rows ``X``.

    Each of the three measurements runs for about ``budget_s`` seconds (at least a few calls).
    """
    sess = session(exported.onnx_bytes)
    names = [exported.proba_output]
    reps = int(np.ceil(512 / len(X)))
    rows = np.ascontiguousarray(np.tile(X, (reps, 1))[:512], dtype=np.float32)

    def call(batch: NDArray[np.float32]) -> object:
        return lambda: sess.run(names, {exported.input_name: batch})

    one = rows[:1].copy()
    us1 = _median_call_us(call(one), budget_s, min_calls=200)
    us64 = _median_call_us(call(rows[:64].copy()), budget_s, min_calls=20) / 64
    us512 = _median_call_us(call(rows), budget_s, min_calls=5) / 512
    return Cost(
        us_batch1=round(us1, 3),
        us_per_row_batch64=round(us64, 4),
        us_per_row_batch512=round(us512, 4),
    )
