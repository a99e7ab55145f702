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


def measure_cascade_cost(
    variant_bytes: bytes,
    full_bytes: bytes,
    output: str,
    column: int,
    band: tuple[float, float],
    X: NDArray[np.float32],
    feeds: Callable[[NDArray[np.float32]], dict[str, NDArray[Any]]],
    budget_s: float = 0.4,
) -> float:
    """µs per row at batch 64 of a cascade on real rows ``X`` (the median of passes over up to
    :data:`MAX_ROWS` rows): the variant scores each batch, and the rows whose score
    (probability column ``column``) lies inside ``band`` are scored again by the full model in
    one call. Single-threaded sessions, as :func:`measure_cost`."""
    variant, full = session(variant_bytes), session(full_bytes)
    low, high = band
    reps = int(np.ceil(MAX_ROWS / len(X)))
    rows = np.ascontiguousarray(np.tile(X, (reps, 1))[:MAX_ROWS], dtype=np.float32)
    batch = 64
    chunks = [rows[i : i + batch].copy() for i in range(0, MAX_ROWS - batch + 1, batch)]
    batches = [(chunk, feeds(chunk)) for chunk in chunks]

    def run(_: int) -> object:
        for chunk, fed in batches:  # a whole pass: the share escalated varies by batch
            scores = np.asarray(variant.run([output], fed)[0])[:, column]
            inside = (scores >= low) & (scores <= high)
            if inside.any():
                full.run([output], feeds(chunk[inside]))
        return None

    return round(_median_call_us(run, budget_s, 3) / (len(batches) * batch), 4)
