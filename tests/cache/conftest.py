"""Fixtures for the cache tests: model cards, metrics registries, backends over real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache
from server.modelcard import Cost, ModelCard, card_problems, placeholder_card
from tests.support.redis_server import RedisProcess

# Generous for a shared, noisy machine: these tests are about behaviour, not speed.
RELAXED_TIMEOUT_S = 2.0


def make_card(
    name: str = "fraud",
    version: int = 1,
    *,
    sha256: str = "ab" * 32,
    n_features: int = 4,
    n_classes: int = 2,
    us_per_row_batch64: float = 5.0,
) -> ModelCard:
    """A valid model.json for a model that exists only in the test."""
    card = placeholder_card(
        name,
        version,
        feature_names=[f"f{i}" for i in range(n_features)],
        sha256=sha256,
        classes=list(range(n_classes)),
        cost=Cost(us_batch1=10.0, us_per_row_batch64=us_per_row_batch64, us_per_row_batch512=1.0),
    )
    assert card_problems(card) == []
    return card


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> CacheMetrics:
    return CacheMetrics(registry)


@pytest.fixture
def key_prefix() -> bytes:
    """Keys of one test, so tests sharing the session Redis never see each other's entries."""
    return f"test:{uuid.uuid4().hex}:".encode()


@pytest.fixture
async def redis_cache(
    redis_server: RedisProcess, metrics: CacheMetrics
) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_server.url, timeout_s=RELAXED_TIMEOUT_S, metrics=metrics)
    try:
        yield cache
    finally:
        await cache.close()


@pytest.fixture
async def tiered(redis_cache: RedisCache, metrics: CacheMetrics) -> AsyncIterator[TieredCache]:
    """Memory in front of the session Redis, as the server runs with a redis_url."""
    cache = TieredCache(
        MemoryCache(10_000, 16 * 1024 * 1024), redis_cache, promote_ttl_s=60.0, metrics=metrics
    )
    try:
        yield cache
    finally:
        await cache.close()
