"""The score cache behind the real batcher and ONNX Runtime (no HTTP; the wiring comes later)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from server.batcher import Batcher, CacheMode
from server.cache.batch import ModelScoreCache
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache
from server.metrics import ServerMetrics
from server.modelcard import load_card
from server.runner import Runner
from tests.support.redis_server import RedisProcess


@pytest.fixture
async def served(
    model_repo: Path, redis_server: RedisProcess
) -> AsyncIterator[tuple[Batcher, ModelScoreCache, np.ndarray]]:
    version_dir = model_repo / "xgb_small" / "1"
    card = load_card(version_dir)
    runner = Runner(version_dir / card.onnx.file, card)
    runner.warm_up(inline_max_cost_us=60.0, max_batch_rows=64)
    registry = CollectorRegistry()
    metrics = CacheMetrics(registry)
    tiered = TieredCache(
        MemoryCache(1_000, 1 << 20),
        RedisCache(redis_server.url, timeout_s=2.0, metrics=metrics),
        promote_ttl_s=60,
        metrics=metrics,
    )
    await tiered.flush(card.name)  # the session Redis may hold earlier tests' entries
    cache = ModelScoreCache(card, tiered, ttl_s=60, max_batch_rows=64)
    batcher = Batcher(runner, metrics=ServerMetrics(), max_batch_rows=32, cache=cache)
    batcher.start()
    with np.load(version_dir / "holdout.npz") as data:
        rows = data["X"][:40].astype(np.float32)
    try:
        yield batcher, cache, rows
    finally:
        await batcher.stop(timeout_s=5.0)
        await cache.close()
        await tiered.close()
        runner.close()


async def predict(batcher: Batcher, rows: np.ndarray, mode: CacheMode = "default") -> np.ndarray:
    deadline = time.monotonic() + 10.0
    return await batcher.predict(rows, deadline=deadline, request_id="t", cache_mode=mode)


async def test_a_repeat_is_a_hit_with_the_identical_answer(
    served: tuple[Batcher, ModelScoreCache, np.ndarray],
) -> None:
    batcher, cache, rows = served
    first = await predict(batcher, rows[:10])
    assert cache.hits == 0
    again = await predict(batcher, rows[:10])
    assert cache.hits == 10
    assert np.array_equal(first, again)
    # Concurrent requests, partly cached: every answer equals the direct model's.
    answers = await asyncio.gather(*(predict(batcher, rows[i : i + 5]) for i in range(0, 40, 5)))
    direct = batcher.runner.run(rows)
    assert np.allclose(np.concatenate(answers), direct, atol=1e-6)


async def test_cache_control_modes_through_the_batcher(
    served: tuple[Batcher, ModelScoreCache, np.ndarray],
) -> None:
    batcher, cache, rows = served
    a, b = rows[:4], rows[4:8]
    await predict(batcher, a, "no-store")  # neither reads nor writes
    await predict(batcher, a)
    assert (cache.lookups, cache.hits) == (4, 0)

    await predict(batcher, a, "no-cache")  # does not read...
    assert cache.lookups == 4
    await predict(batcher, b, "no-cache")  # ...but refreshes the entry
    await predict(batcher, b)
    assert (cache.lookups, cache.hits) == (8, 4)


async def test_one_request_partly_cached_gets_exactly_the_models_answer(
    served: tuple[Batcher, ModelScoreCache, np.ndarray],
) -> None:
    batcher, cache, rows = served
    await predict(batcher, rows[:4])
    got = await predict(batcher, rows[2:6])  # rows 2-3 hit, 4-5 are computed
    assert (cache.lookups, cache.hits) == (8, 2)
    assert np.allclose(got, batcher.runner.run(rows[2:6]), atol=1e-6)
    assert (await cache.lookup(rows[4:6]))[0].all()  # the computed rows were stored


class _BrokenCache:
    """A score cache whose lookup or store raises."""

    def __init__(self, broken: str) -> None:
        self.broken = broken

    async def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.broken == "lookup":
            raise RuntimeError("lookup broke")
        return np.zeros(len(rows), dtype=bool), np.zeros((len(rows), 2), dtype=np.float32)

    def store(self, rows: np.ndarray, scores: np.ndarray) -> None:
        if self.broken == "store":
            raise RuntimeError("store broke")

    def skip(self, rows: int) -> bool:
        return False


@pytest.mark.parametrize("broken", ["lookup", "store"])
async def test_a_failing_cache_fails_no_prediction(model_repo: Path, broken: str) -> None:
    version_dir = model_repo / "xgb_small" / "1"
    card = load_card(version_dir)
    runner = Runner(version_dir / card.onnx.file, card)
    runner.warm_up(inline_max_cost_us=60.0, max_batch_rows=64)
    batcher = Batcher(
        runner, metrics=ServerMetrics(), max_batch_rows=32, cache=_BrokenCache(broken)
    )
    batcher.start()
    with np.load(version_dir / "holdout.npz") as data:
        rows = data["X"][:8].astype(np.float32)
    try:
        alone = await predict(batcher, rows[:2])  # one request: the single-request path
        together = await asyncio.gather(*(predict(batcher, rows[i : i + 2]) for i in (2, 4, 6)))
    finally:
        await batcher.stop(timeout_s=5.0)
    direct = runner.run(rows)
    assert np.allclose(np.concatenate([alone, *together]), direct, atol=1e-6)
    assert batcher.stats.hook_errors >= 2  # every failure counted (and logged), none raised
    assert batcher.stats.coalesced_batches >= 1  # the generic path ran too
