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
from server.modelcard import (
    Cost,
    DatasetInfo,
    FeatureReference,
    Histogram,
    InputSpec,
    Metrics,
    ModelCard,
    OnnxInfo,
    OutputSpec,
    Parity,
    Reference,
    card_problems,
)
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
    features = [f"f{i}" for i in range(n_features)]
    hist = Histogram(bin_edges=[0.0, 1.0], counts=[1, 1, 1])
    card = ModelCard(
        schema_version=1,
        name=name,
        version=version,
        created_at="2026-01-01T00:00:00Z",
        framework="sklearn",
        estimator="sklearn.linear_model.LogisticRegression",
        recipe="test",
        input=InputSpec(name="input", feature_names=features),
        outputs=OutputSpec(probabilities="probabilities"),
        classes=list(range(n_classes)),
        positive_class=1,
        onnx=OnnxInfo(file="model.onnx", sha256=sha256, opset=17, size_bytes=1),
        dataset=DatasetInfo(
            name="t", rows_train=1, rows_validation=1, rows_test=1, positive_rate_train=0.5
        ),
        metrics=Metrics(
            threshold=0.5,
            precision=1,
            recall=1,
            f1=1,
            roc_auc=1,
            pr_auc=1,
            log_loss=0,
            brier=0,
            accuracy=1,
            baseline_accuracy=0.5,
            confusion_matrix=[[1, 0], [0, 1]],
            positive_rate_test=0.5,
        ),
        parity=Parity(max_abs_diff=0.0, rows=1, tolerance=1e-5),
        cost=Cost(us_batch1=10.0, us_per_row_batch64=us_per_row_batch64, us_per_row_batch512=1.0),
        reference=Reference(
            features=[FeatureReference(name=f, histogram=hist) for f in features],
            scores=hist,
            base_rate=0.5,
            predicted_positive_rate=0.5,
        ),
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
