"""Build the process's cache from settings, and one score cache per model version.

=====================  ==================================  =======================================
settings               result of :func:`build_cache`       note
=====================  ==================================  =======================================
cache off              None                                no model is cached
no redis_url           memory only                         the embedded default (``make serve``)
redis_url              memory, then Redis                  workers and replicas share entries
redis_url, memory 0    Redis only
=====================  ==================================  =======================================

Call :func:`build_cache` in the app's lifespan (the Redis pool is bound to the running loop) and
``await cache.close()`` in its ``finally``. Building never touches the network: a Redis that is
down at start-up only means misses until it is up.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from server.cache.batch import ModelScoreCache
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache
from server.modelcard import ModelCard
from server.settings import Settings


def build_cache(settings: Settings, registry: CollectorRegistry) -> TieredCache | None:
    if not settings.cache:
        return None
    metrics = CacheMetrics(registry)
    memory = None
    if settings.cache_memory_entries > 0 and settings.cache_memory_bytes > 0:
        memory = MemoryCache(settings.cache_memory_entries, settings.cache_memory_bytes)
    remote = None
    if settings.redis_url:
        remote = RedisCache(
            settings.redis_url,
            timeout_s=settings.redis_timeout_ms / 1000.0,
            breaker_failures=settings.redis_breaker_failures,
            breaker_backoff_s=settings.redis_breaker_backoff_s,
            max_connections=settings.redis_max_connections,
            metrics=metrics,
        )
    if memory is None and remote is None:
        return None
    return TieredCache(
        memory,
        remote,
        promote_ttl_s=settings.cache_ttl_s,
        metrics=metrics,
        generation_refresh_s=settings.cache_generation_refresh_s,
    )


def model_ttl_s(settings: Settings, model: str) -> float:
    """The model's TTL: its override if any, else the default; 0 means not cached."""
    if not settings.cache:
        return 0.0
    return max(0.0, settings.cache_model_ttl_s.get(model, settings.cache_ttl_s))


MISS_COST_FACTOR = 3.0
"""How much more a miss costs in the server than the start-up measurement says. That measurement
times the cache's lookup and store alone, in a warm loop; in the server a one-row miss also pays
the memo, the batcher's cache bookkeeping and cold CPU caches between requests. Measured with
``tabserve bench --suite cache`` (unique rows, c=1, its "forced" column): caching ``xgb_small``
cost 80-170 µs more server CPU per miss in two runs, against ~10-13 µs measured at start-up,
where its 12.4 µs inference put it on the line, cached in some runs and not in others."""


def worth_caching(card: ModelCard, settings: Settings, miss_overhead_us: float | None) -> bool:
    """False when the model's one-row inference (model.json's measured ``us_batch1``) costs no
    more than ``MISS_COST_FACTOR`` times what the in-process cache adds to a one-row miss
    (``miss_overhead_us``, measured at start-up by :func:`server.cache.measure.miss_overhead_us`):
    misses would cost more than the inference that hits may later save. A TTL set for the model
    in ``cache_model_ttl_s`` overrides the rule (cached anyway).
    """
    if miss_overhead_us is None or card.name in settings.cache_model_ttl_s:
        return True
    return card.cost.us_batch1 > MISS_COST_FACTOR * miss_overhead_us


def build_model_cache(
    cache: TieredCache | None,
    card: ModelCard,
    settings: Settings,
    *,
    use_remote: bool = True,
    miss_overhead_us: float | None = None,
) -> ModelScoreCache | None:
    """The score cache for one loaded model version, or None when this model is not cached
    (TTL 0, or not :func:`worth_caching` when ``miss_overhead_us`` is given)."""
    ttl = model_ttl_s(settings, card.name)
    if cache is None or ttl <= 0 or not worth_caching(card, settings, miss_overhead_us):
        return None
    return ModelScoreCache(
        card,
        cache,
        ttl,
        use_remote=use_remote,
        auto_skip_remote=settings.cache_redis_auto_skip,
        max_batch_rows=settings.max_batch_rows,
        memo_entries=settings.cache_memo_entries,
        memo_bytes=settings.cache_memo_bytes,
    )
