"""build_cache and the per-model policy, from settings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from server.cache.factory import build_cache, build_model_cache, model_ttl_s
from server.settings import Settings
from tests.cache.conftest import make_card
from tests.support.redis_server import RedisProcess


async def test_no_redis_url_is_memory_only(registry: CollectorRegistry) -> None:
    cache = build_cache(Settings(), registry)
    assert cache is not None and cache.memory is not None and cache.remote is None
    await cache.close()


async def test_cache_off_or_no_tier_builds_nothing(registry: CollectorRegistry) -> None:
    assert build_cache(Settings(cache=False), registry) is None
    assert build_cache(Settings(cache_memory_entries=0), CollectorRegistry()) is None


async def test_redis_url_stacks_memory_and_redis_without_connecting(
    registry: CollectorRegistry, redis_process: RedisProcess
) -> None:
    redis_process.kill()  # building must not need Redis up
    settings = Settings(redis_url=redis_process.url, redis_timeout_ms=500)
    cache = build_cache(settings, registry)
    assert cache is not None and cache.memory is not None and cache.remote is not None
    assert cache.remote.timeout_s == 0.5
    assert registry.get_sample_value("tabserve_cache_circuit_state", {"tier": "redis"}) == 0
    await cache.close()


async def test_per_model_ttl_and_off_switch(registry: CollectorRegistry) -> None:
    settings = Settings(cache_ttl_s=300, cache_model_ttl_s={"fast": 0, "big": 60})
    assert model_ttl_s(settings, "big") == 60
    assert model_ttl_s(settings, "other") == 300
    assert model_ttl_s(Settings(cache=False), "big") == 0
    cache = build_cache(settings, registry)
    assert build_model_cache(cache, make_card(name="fast"), settings) is None
    big = build_model_cache(cache, make_card(name="big"), settings)
    assert big is not None and big.ttl_s == 60
    assert build_model_cache(None, make_card(name="big"), settings) is None
    assert cache is not None
    await cache.close()
