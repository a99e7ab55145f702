"""Inference cost in ONNX Runtime, single-threaded, measured at export time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.onnx_export import Exported, session
from server.modelcard import Cost

MAX_ROWS = 2048
"""Distinct rows cycled through (repeating one row would keep its tree paths hot in cache)."""


def _median_call_us(run: Callable[[int], object], budget_s: float, min_calls: int) -> float:
    """Median µs of ``run(i)`` for i = 0, 1, …, after a warm-up, for about ``budget_s`` seconds."""
    for i in range(3):
        run(i)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_calls or (time.perf_counter() < deadline and len(times) < 20_000):
        start = time.perf_counter_ns()
        run(len(times))
        times.append((time.perf_counter_ns() - start) / 1000.0)
    return float(np.median(times))


def measure_cost(
    exported: Exported,
    X: NDArray[np.float32],
    budget_s: float = 0.4,
    feeds: Callable[[NDArray[np.float32]], dict[str, NDArray[Any]]] | None = None,
) -> Cost:
    """Median µs per call at batch 1 and µs per row at batches 64 and 512, on real rows ``X``.

    Each call takes the next distinct rows of ``X`` (up to :data:`MAX_ROWS`, tiled when fewer).
    Each of the three measurements runs for about ``budget_s`` seconds (at least a few calls).
    ``feeds`` turns rows of the row matrix into the graph's inputs (``Codec.onnx_feeds``; by
    default the matrix is the one input).
    """
    sess = session(exported.onnx_bytes)
    names = [exported.output]
    to_feeds = feeds or (lambda rows: {exported.input_name: rows})
    reps = int(np.ceil(MAX_ROWS / len(X)))
    rows = np.ascontiguousarray(np.tile(X, (reps, 1))[:MAX_ROWS], dtype=np.float32)

    def per_row_us(batch: int, min_calls: int) -> float:
        batches = [
            to_feeds(rows[i : i + batch].copy()) for i in range(0, MAX_ROWS - batch + 1, batch)
        ]

        def run(i: int) -> object:
            return sess.run(names, batches[i % len(batches)])

        return _median_call_us(run, budget_s, min_calls) / batch

    return Cost(
        us_batch1=round(per_row_us(1, 200), 3),
        us_per_row_batch64=round(per_row_us(64, 20), 4),
        us_per_row_batch512=round(per_row_us(512, 5), 4),
    )
