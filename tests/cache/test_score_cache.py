"""ModelScoreCache: what the batcher sees, over memory only and over memory + a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from server.cache.batch import ModelScoreCache, redis_min_rows
from server.cache.generations import FlushFailed
from server.cache.keys import namespace
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache
from tests.cache.conftest import RELAXED_TIMEOUT_S, make_card
from tests.support.redis_server import RedisProcess

CARD = make_card()


def rows_and_scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, CARD.input.n_features)).astype(np.float32)
    p = rng.uniform(size=n).astype(np.float32)
    return rows, np.stack([1 - p, p], axis=1)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def memory_only(metrics: CacheMetrics) -> TieredCache:
    return TieredCache(MemoryCache(1_000, 1 << 20), None, promote_ttl_s=60, metrics=metrics)


def worker(
    url: str,
    metrics: CacheMetrics | None,
    *,
    memory: bool = True,
    refresh_s: float = 1.0,
    timeout_s: float = RELAXED_TIMEOUT_S,
) -> TieredCache:
    """One server process's cache: its own memory tier, the shared Redis."""
    return TieredCache(
        MemoryCache(1_000, 1 << 20) if memory else None,
        RedisCache(
            url, timeout_s=timeout_s, breaker_failures=2, breaker_backoff_s=60, metrics=metrics
        ),
        promote_ttl_s=60,
        metrics=metrics,
        generation_refresh_s=refresh_s,
    )


@pytest.fixture
async def local(metrics: CacheMetrics) -> AsyncIterator[ModelScoreCache]:
    tiered = memory_only(metrics)
    cache = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    yield cache
    await cache.close()
    await tiered.close()


async def test_store_then_lookup_hits_with_the_same_scores(local: ModelScoreCache) -> None:
    rows, scores = rows_and_scores(8)
    hit, _ = await local.lookup(rows)
    assert not hit.any()
    local.store(rows, scores)
    hit, got = await local.lookup(rows)
    assert hit.all()
    assert np.array_equal(got, scores)
    assert got.dtype == np.float32 and got.shape == (8, 2)


async def test_store_reuses_the_lookups_keys_only_for_the_same_rows_and_generation(
    metrics: CacheMetrics,
) -> None:
    tiered = memory_only(metrics)
    cache = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    a, scores_a = rows_and_scores(2, seed=1)
    b, scores_b = rows_and_scores(2, seed=2)
    await cache.lookup(a)
    cache.store(b, scores_b)  # other rows than the lookup's: their own keys
    assert (await cache.lookup(b))[0].all()
    assert not (await cache.lookup(a))[0].any()
    await tiered.flush("fraud")
    cache.store(a, scores_a)  # looked up before the flush: keys of the new generation
    hit, got = await cache.lookup(a)
    assert hit.all() and np.array_equal(got, scores_a)
    await tiered.close()


async def test_partial_hits_within_a_batch(local: ModelScoreCache) -> None:
    rows, scores = rows_and_scores(4)
    local.store(rows[[0, 2]], scores[[0, 2]])
    hit, got = await local.lookup(rows)
    assert hit.tolist() == [True, False, True, False]
    assert np.array_equal(got[hit], scores[[0, 2]])
    assert local.hit_ratio == 0.5


async def test_duplicate_rows_share_one_entry_and_one_read(
    local: ModelScoreCache, registry: CollectorRegistry
) -> None:
    rows, scores = rows_and_scores(2)
    batch = rows[[0, 1, 0, 0, 1]]
    hit, _ = await local.lookup(batch)
    assert not hit.any()
    assert sample(registry, "tabserve_cache_misses_total", model="fraud", tier="memory") == 2
    local.store(rows, scores)
    hit, got = await local.lookup(batch)
    assert hit.all()
    assert np.array_equal(got, scores[[0, 1, 0, 0, 1]])
    assert sample(registry, "tabserve_cache_hits_total", model="fraud", tier="memory") == 2


async def test_partial_hits_with_duplicates(local: ModelScoreCache) -> None:
    rows, scores = rows_and_scores(3)
    local.store(rows[[1]], scores[[1]])
    hit, got = await local.lookup(rows[[0, 1, 2, 1, 0]])
    assert hit.tolist() == [False, True, False, True, False]
    assert np.array_equal(got[hit], scores[[1, 1]])


async def test_a_memory_hit_lookup_never_suspends(local: ModelScoreCache) -> None:
    """The whole lookup runs to completion on its first step: no trip through the event loop."""
    rows, scores = rows_and_scores(4)
    local.store(rows, scores)
    step = local.lookup(rows)
    with pytest.raises(StopIteration) as done:
        step.send(None)
    hit, got = done.value.value
    assert hit.all()
    got[0, 0] = 1.0  # the caller owns the array: writable, not a view of cached bytes
    _, again = await local.lookup(rows)
    assert np.array_equal(again, scores)


async def test_negative_zero_and_nan_rows_hit_their_canonical_twin(local: ModelScoreCache) -> None:
    rows = np.array([[0.0, np.nan, 1.0, 2.0]], dtype=np.float32)
    local.store(rows, np.array([[0.25, 0.75]], dtype=np.float32))
    twin = np.array([[-0.0, -np.nan, 1.0, 2.0]], dtype=np.float32)
    hit, got = await local.lookup(twin)
    assert hit.tolist() == [True] and got.tolist() == [[0.25, 0.75]]


async def test_empty_batches(local: ModelScoreCache) -> None:
    hit, got = await local.lookup(np.zeros((0, 4), dtype=np.float32))
    assert hit.shape == (0,) and got.shape == (0, 2)
    local.store(np.zeros((0, 4), dtype=np.float32), np.zeros((0, 2), dtype=np.float32))
    assert local.hit_ratio is None


async def test_a_new_model_version_is_never_answered_from_the_old_one(
    metrics: CacheMetrics,
) -> None:
    tiered = memory_only(metrics)
    v1 = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    v2 = ModelScoreCache(make_card(version=2), tiered, ttl_s=60, max_batch_rows=64)
    reexported = ModelScoreCache(make_card(sha256="ef" * 32), tiered, ttl_s=60, max_batch_rows=64)
    rows, scores = rows_and_scores(3)
    v1.store(rows, scores)
    assert (await v1.lookup(rows))[0].all()
    assert not (await v2.lookup(rows))[0].any()
    assert not (await reexported.lookup(rows))[0].any()
    await tiered.close()


async def test_flush_drops_one_model_and_keeps_the_others(metrics: CacheMetrics) -> None:
    tiered = memory_only(metrics)
    fraud = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    churn = ModelScoreCache(make_card(name="churn"), tiered, ttl_s=60, max_batch_rows=64)
    rows, scores = rows_and_scores(3)
    fraud.store(rows, scores)
    churn.store(rows, scores)
    before = tiered.generations.current("fraud")
    assert await tiered.flush("fraud") == before + 1
    assert not (await fraud.lookup(rows))[0].any()
    assert (await churn.lookup(rows))[0].all()
    assert tiered.memory is not None and len(tiered.memory) == 3  # fraud's rows are gone
    await tiered.close()


async def test_scores_of_the_wrong_shape_are_refused(local: ModelScoreCache) -> None:
    rows, _ = rows_and_scores(2)
    with pytest.raises(ValueError, match="shape"):
        local.store(rows, np.zeros((2, 3), dtype=np.float32))


# --- with a real Redis -------------------------------------------------------------------------


async def test_a_row_computed_by_one_worker_is_a_hit_in_another(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    a, b = worker(redis_process.url, metrics), worker(redis_process.url, None)
    in_a, in_b = (
        ModelScoreCache(CARD, a, ttl_s=60, max_batch_rows=64),
        ModelScoreCache(CARD, b, ttl_s=60, max_batch_rows=64),
    )
    try:
        rows, scores = rows_and_scores(5)
        await in_a.lookup(rows)  # learns the shared generation
        in_a.store(rows, scores)
        assert in_a.pending_writes == 1
        await in_a.close()  # waits for the background write
        key_bytes = len(namespace(CARD, a.generations.current("fraud"))) + 16
        assert sample(
            registry, "tabserve_cache_written_bytes_total", model="fraud", tier="redis"
        ) == 5 * (key_bytes + 8)

        hit, got = await in_b.lookup(rows)  # from Redis
        assert hit.all() and np.array_equal(got, scores)
        assert b.memory is not None and len(b.memory) == 5  # promoted
    finally:
        await in_b.close()
        await a.close()
        await b.close()


async def test_memory_misses_go_to_redis_in_one_call_and_are_counted_by_tier(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    a, b = worker(redis_process.url, None), worker(redis_process.url, metrics)
    in_a, in_b = (
        ModelScoreCache(CARD, a, ttl_s=60, max_batch_rows=64),
        ModelScoreCache(CARD, b, ttl_s=60, max_batch_rows=64),
    )
    try:
        rows, scores = rows_and_scores(4)
        await in_a.lookup(rows)
        in_a.store(rows[:2], scores[:2])
        await in_a.close()
        await in_b.lookup(rows[:1])  # row 0 now in b's memory
        hit, _ = await in_b.lookup(rows)
        assert hit.tolist() == [True, True, False, False]

        def count(name: str, tier: str) -> float:
            return sample(registry, name, model="fraud", tier=tier)

        assert count("tabserve_cache_hits_total", "memory") == 1
        assert count("tabserve_cache_hits_total", "redis") == 2  # row 0 once, row 1 once
        assert count("tabserve_cache_misses_total", "redis") == 2
        # one MGET per lookup, not per row
        rtt_count = registry.get_sample_value(
            "tabserve_cache_roundtrip_seconds_count", {"tier": "redis", "op": "get"}
        )
        assert rtt_count == 2
        assert in_b.hit_ratio == 3 / 5
    finally:
        await in_b.close()
        await a.close()
        await b.close()


async def test_a_flush_in_one_worker_reaches_the_others(redis_process: RedisProcess) -> None:
    a = worker(redis_process.url, None, refresh_s=0.05)
    b = worker(redis_process.url, None, refresh_s=0.05)
    in_a, in_b = (
        ModelScoreCache(CARD, a, ttl_s=60, max_batch_rows=64),
        ModelScoreCache(CARD, b, ttl_s=60, max_batch_rows=64),
    )
    try:
        rows, scores = rows_and_scores(3)
        await in_a.lookup(rows)
        await in_b.lookup(rows)
        in_b.store(rows, scores)  # in b's memory and in Redis
        await in_b.close()
        assert (await in_a.lookup(rows))[0].all()
        assert a.generations.current("fraud") == b.generations.current("fraud")

        new = await a.flush("fraud")
        assert not (await in_a.lookup(rows))[0].any()
        await asyncio.sleep(0.1)  # past b's refresh interval
        assert (await in_b.lookup(rows))[0].all()  # still the old generation; re-read started
        for _ in range(100):  # the background re-read lands within one round trip
            await asyncio.sleep(0.01)
            if b.generations.current("fraud") == new:
                break
        assert not (await in_b.lookup(rows))[0].any()
        assert b.generations.current("fraud") == new
        assert b.memory is not None and len(b.memory) == 0  # dropped when the change was seen
    finally:
        await a.close()
        await b.close()


async def test_redis_down_the_score_cache_keeps_answering_misses(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    redis_process.kill()
    tiered = worker(redis_process.url, metrics, refresh_s=0.0)
    cache = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    try:
        rows, scores = rows_and_scores(3)
        hit, _ = await cache.lookup(rows)
        assert not hit.any()
        cache.store(rows, scores)
        await cache.close()
        hit, _ = await cache.lookup(rows)  # the memory tier still serves
        assert hit.all()
        failures = sum(
            sample(registry, f"tabserve_cache_{kind}_total", model="fraud", tier="redis", op=op)
            for kind in ("errors", "skipped")
            for op in ("get", "set")
        )
        assert failures >= 1
        with pytest.raises(FlushFailed):
            await tiered.flush("fraud")
        assert not (await ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64).lookup(rows))[
            0
        ].any()
    finally:
        await tiered.close()


async def test_without_a_memory_tier_a_write_in_flight_is_already_readable(
    redis_process: RedisProcess,
) -> None:
    tiered = worker(redis_process.url, None, memory=False)
    cache = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64)
    try:
        rows, scores = rows_and_scores(2)
        await cache.lookup(rows)
        cache.store(rows, scores)
        hit, got = await cache.lookup(rows)  # the write may or may not have landed: both hit
        assert hit.all() and np.array_equal(got, scores)
        await cache.close()
        hit, _ = await cache.lookup(rows)
        assert hit.all()
    finally:
        await tiered.close()


async def test_writes_to_a_hung_redis_are_bounded_and_dropped_when_too_many(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    tiered = worker(redis_process.url, metrics, timeout_s=0.2)
    cache = ModelScoreCache(CARD, tiered, ttl_s=60, max_batch_rows=64, max_pending_writes=2)
    try:
        rows, scores = rows_and_scores(4)
        await cache.lookup(rows)
        redis_process.pause()
        for i in range(4):
            cache.store(rows[i : i + 1], scores[i : i + 1])
        assert cache.pending_writes == 2
        assert (
            sample(registry, "tabserve_cache_skipped_total", model="fraud", tier="redis", op="set")
            == 2
        )
        await cache.close(timeout_s=5.0)
        assert cache.pending_writes == 0
        assert (
            sample(registry, "tabserve_cache_timeouts_total", model="fraud", tier="redis", op="set")
            == 2
        )
    finally:
        redis_process.resume()
        await tiered.close()


# --- per-model Redis skip ----------------------------------------------------------------------


def test_redis_min_rows_is_the_break_even_batch() -> None:
    assert redis_min_rows(us_batch1=150, us_per_row=6, rtt_us=100) == 1  # one row pays
    # 40 + (k - 1) * 6 > 100  ⇔  k > 11
    assert redis_min_rows(us_batch1=40, us_per_row=6, rtt_us=100) == 12
    assert redis_min_rows(us_batch1=10, us_per_row=0.1, rtt_us=100) == 902
    assert redis_min_rows(us_batch1=10, us_per_row=0, rtt_us=100) > 10**9


async def test_a_model_cheaper_than_a_round_trip_never_touches_redis(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    tiered = worker(redis_process.url, metrics)
    assert tiered.remote is not None
    cheap = make_card(name="cheap", us_per_row_batch64=0.1)  # us_batch1 10: never pays at 64
    dear = make_card(name="dear", us_per_row_batch64=50.0)
    in_cheap = ModelScoreCache(cheap, tiered, ttl_s=60, max_batch_rows=64, auto_skip_remote=True)
    in_dear = ModelScoreCache(dear, tiered, ttl_s=60, max_batch_rows=64, auto_skip_remote=True)
    try:
        assert in_cheap.remote_min_rows() is None
        assert in_dear.remote_min_rows() == redis_min_rows(10, 50, tiered.remote.rtt_us)
        rows, scores = rows_and_scores(8)
        for cache in (in_cheap, in_dear):
            await cache.lookup(rows)
            cache.store(rows, scores)
        assert in_cheap.pending_writes == 0
        await in_dear.close()
        assert sample(registry, "tabserve_cache_misses_total", model="cheap", tier="redis") == 0
        assert sample(registry, "tabserve_cache_misses_total", model="dear", tier="redis") == 8
        assert (
            sample(registry, "tabserve_cache_written_bytes_total", model="cheap", tier="redis") == 0
        )
        assert in_cheap.describe()["redis_min_rows"] is None
    finally:
        await tiered.close()
