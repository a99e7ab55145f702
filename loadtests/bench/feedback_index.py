"""The feedback memory's longest ``record`` once its request index is full, sharded and not.

Run: ``.venv/bin/python -m loadtests.bench.feedback_index``. Not a test (timings on a shared
machine are noisy). Fills a :class:`server.monitoring.feedback.ServedRows` of the default
capacity (100,000 rows, 24 features) with one-row requests, as the monitor's fold steps do
(32 requests a call), timing each call while it fills, then every call over ``--requests``
more: in steady state each
call adds as many ids to the request index as it prunes. A dict under that churn rebuilds its
table now and then in one go, and the longest calls show it. Prints the median, p99.9 and
longest call, and the calls over 1 ms, for the index as served (``SHARDS`` ordered maps) and as
one map (how it was before).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from server.monitoring import feedback

CAPACITY = 100_000
PER_CALL = 32


def call_times(shards: int, requests: int, *, fill: bool = False) -> list[float]:
    """Seconds of each ``record`` call after the index filled (``fill``: of each call while it
    filled instead), with ``shards`` shards."""
    served = feedback.ServedRows(CAPACITY, 24, shards=shards)
    rows = np.zeros((PER_CALL, 24), dtype=np.float32)
    scores = np.zeros(PER_CALL, dtype=np.float32)
    k = 0
    times: list[float] = []
    for call in range((CAPACITY + requests) // PER_CALL):
        parts = [(f"{k + i:032x}", 0, 1) for i in range(PER_CALL)]
        k += PER_CALL
        started = time.perf_counter()
        served.record(rows, scores, parts)
        if (call * PER_CALL < CAPACITY) == fill:
            times.append(time.perf_counter() - started)
    return times


def _line(label: str, times: list[float]) -> str:
    times = sorted(times)
    over = sum(t > 0.001 for t in times)
    return (
        f"{label}: {len(times)} calls of {PER_CALL} requests; median "
        f"{statistics.median(times) * 1e6:.1f} us, "
        f"p99.9 {times[int(len(times) * 0.999)] * 1e6:.1f} us, "
        f"longest {times[-1] * 1e3:.2f} ms, {over} over 1 ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=800_000)
    args = p.parse_args()
    for shards in (feedback.SHARDS, 1):
        print(_line(f"{shards:>3} shard(s), filling", call_times(shards, 0, fill=True)))
        print(_line(f"{shards:>3} shard(s), full   ", call_times(shards, args.requests)))


if __name__ == "__main__":
    main()
