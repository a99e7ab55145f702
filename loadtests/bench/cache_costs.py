"""What the response cache's pieces cost per tier, timed in process.

``python -m loadtests.bench.cache_costs [--redis-url redis://127.0.0.1:6379/0] [--features 30]``

Prints, at batch sizes 1, 16 and 64: the memory tier's ``ModelScoreCache.lookup`` cost (all
hits, hashing included) and ``store`` cost (memory only: the part on the batch's path) per batch
and per row; the key hashing alone; and, with a Redis URL, the
raw ``MGET`` round trip and a Redis-only lookup (memory tier off, all hits). Medians and p99 over
repeated runs on one core; numbers from a shared machine are noisy, compare them side by side.

Redis pays for a model only when a batch of hits saves more inference than the round trip costs:
``batch * us_per_row(model) > mget_us(batch)``. At batch 64 that is ``us_per_row > mget_us(64)/64``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial

import numpy as np

from server.cache.batch import ModelScoreCache
from server.cache.keys import row_keys
from server.cache.measure import stand_in_card
from server.cache.memory import MemoryCache
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache

BATCHES = (1, 16, 64)


def _summary(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


async def _time_async(run: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    for _ in range(min(50, repeat)):
        await run()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - started)
    return _summary(samples)


def _time_sync(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return _summary(samples)


async def measure(redis_url: str | None, n_features: int, repeat: int) -> list[str]:
    card = stand_in_card(n_features)
    rng = np.random.default_rng(0)
    lines = [f"features={n_features} repeat={repeat}  (median / p99, microseconds)"]
    memory = TieredCache(MemoryCache(100_000, 1 << 26), None, promote_ttl_s=600)
    local = ModelScoreCache(card, memory, ttl_s=600, max_batch_rows=max(BATCHES))
    remote: RedisCache | None = None
    redis_only: TieredCache | None = None
    if redis_url:
        remote = RedisCache(redis_url, timeout_s=1.0)
        redis_only = TieredCache(None, remote, promote_ttl_s=600)
    try:
        for n in BATCHES:
            rows = rng.normal(size=(n, n_features)).astype(np.float32)
            scores = rng.uniform(size=(n, 2)).astype(np.float32)
            local.store(rows, scores)
            med, p99 = _time_sync(partial(row_keys, b"ns:", rows), repeat)
            lines.append(
                f"batch {n:>2}  hash keys         {med:8.1f} / {p99:8.1f}   per row {med / n:6.2f}"
            )
            med, p99 = await _time_async(partial(local.lookup, rows), repeat)
            lines.append(
                f"batch {n:>2}  memory lookup     {med:8.1f} / {p99:8.1f}   per row {med / n:6.2f}"
            )
            med, p99 = _time_sync(partial(local.store, rows, scores), repeat)
            lines.append(
                f"batch {n:>2}  memory store      {med:8.1f} / {p99:8.1f}   per row {med / n:6.2f}"
            )
            if remote is not None and redis_only is not None:
                via_redis = ModelScoreCache(
                    card, redis_only, ttl_s=600, max_batch_rows=max(BATCHES)
                )
                via_redis.store(rows, scores)
                await via_redis.close()
                keys = row_keys(b"measure:", rows)
                await remote.store([(k, b"12345678") for k in keys], 600)
                med, p99 = await _time_async(partial(remote.fetch, keys), repeat)
                lines.append(
                    f"batch {n:>2}  redis MGET        {med:8.1f} / {p99:8.1f}"
                    f"   per row {med / n:6.2f}"
                )
                med, p99 = await _time_async(partial(via_redis.lookup, rows), repeat)
                lines.append(
                    f"batch {n:>2}  redis-only lookup {med:8.1f} / {p99:8.1f}"
                    f"   per row {med / n:6.2f}"
                )
    finally:
        await local.close()
        await memory.close()
        if redis_only is not None:
            await redis_only.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench.cache_costs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis-url", default=None, help="measure Redis too (a real server)")
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args(argv)
    for line in asyncio.run(measure(args.redis_url, args.features, args.repeat)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
