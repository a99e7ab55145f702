"""What the in-process cache adds to a one-row miss, measured once at start-up.

The numbers behind it for every tier and batch size: ``python -m loadtests.bench.cache_costs``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from server.cache.batch import ModelScoreCache
from server.cache.memory import MemoryCache
from server.cache.tiered import TieredCache
from server.modelcard import ModelCard, placeholder_card


def stand_in_card(n_features: int) -> ModelCard:
    """A stand-in card: only name, version, sha256, width and classes matter to the cache."""
    return placeholder_card("measure", feature_names=[f"f{i}" for i in range(n_features)])


async def miss_overhead_us(n_features: int = 32, repeat: int = 300) -> float:
    """Median cost (µs) of what the in-process cache adds to a one-row batch that misses: one
    ``lookup`` and one ``store`` (hashing twice, memory tier only). A few milliseconds in all.

    The server measures it at start-up: a model whose one-row inference costs no more than this
    is not cached unless its TTL is set explicitly (see :func:`server.cache.factory.worth_caching`).
    """
    card = stand_in_card(n_features)
    rows = np.random.default_rng(0).normal(size=(repeat + 50, 1, n_features)).astype(np.float32)
    scores = np.full((1, 2), 0.5, dtype=np.float32)
    tiered = TieredCache(MemoryCache(repeat + 100, 1 << 24), None, promote_ttl_s=60)
    cache = ModelScoreCache(card, tiered, ttl_s=60, max_batch_rows=1)
    samples: list[float] = []
    try:
        for i, row in enumerate(rows):
            started = time.perf_counter()
            await cache.lookup(row)
            cache.store(row, scores)
            if i >= 50:  # the first ones warm up
                samples.append(time.perf_counter() - started)
    finally:
        await cache.close()
        await tiered.close()
    return statistics.median(samples) * 1e6
