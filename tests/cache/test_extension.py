"""The cache extension in the app (httpx over ASGI, real model repository, real Redis process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from server.app import create_app, default_extensions
from server.cache.extension import CacheExtension
from server.cache.factory import MISS_COST_FACTOR, build_model_cache, worth_caching
from server.monitoring.extension import MonitoringExtension
from server.retrain_trigger import RetrainTrigger
from server.settings import Settings
from server.shadow.extension import ShadowExtension
from tests.cache.conftest import make_card
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess

ADMIN = {"Authorization": "Bearer t"}
CACHED = {"xgb_small": 300.0, "logreg": 300.0}


@asynccontextmanager
async def serving(model_repo: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    # The test models are cheaper than a cache miss: a TTL of their own makes them cached.
    overrides.setdefault("cache_model_ttl_s", CACHED)
    overrides.setdefault("monitoring", False)
    settings = Settings(models_dir=model_repo, admin_token="t", **overrides)
    app = create_app(settings, extensions=default_extensions(settings))
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.fixture(scope="module")
def rows(model_repo: Path) -> list[list[float]]:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        out: list[list[float]] = data["X"][:8].astype(np.float32).tolist()
    return out


def test_default_extensions_put_the_cache_first() -> None:
    exts = default_extensions(Settings())
    assert [type(e) for e in exts] == [
        CacheExtension,
        MonitoringExtension,
        ShadowExtension,
        RetrainTrigger,
    ]
    assert default_extensions(Settings(cache=False, monitoring=False)) == []


async def cache_state(client: httpx.AsyncClient, model: str) -> dict[str, Any]:
    state: dict[str, Any] = (await client.get(f"/v1/models/{model}")).json()["detail"][-1]["cache"]
    return state


async def test_serves_when_redis_is_down_at_start_up(
    model_repo: Path, rows: list[list[float]]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with serving(
        model_repo, redis_url=dead, redis_timeout_ms=50, cache_redis_auto_skip=False
    ) as client:
        for _ in range(3):
            r = await client.post("/v1/models/xgb_small/predict", json={"instances": rows})
            assert r.status_code == 200
        state = await cache_state(client, "xgb_small")
        assert state["tiers"] == ["response", "memory", "redis"]
        assert state["rows_hit"] == 16  # the in-process tier still serves
        # A flush that cannot reach Redis is a clear 503, not a silent success.
        flush = await client.post("/admin/models/xgb_small/cache/flush", headers=ADMIN)
        assert flush.status_code == 503
        assert flush.json()["type"] == "urn:tabserve:problem:cache-unavailable"
        assert flush.headers["retry-after"] == "1"


async def test_per_model_ttl_turns_one_model_off(model_repo: Path) -> None:
    async with serving(model_repo, cache_model_ttl_s={"logreg": 0, "xgb_small": 30}) as client:
        assert await cache_state(client, "logreg") == {"enabled": False}
        state = await cache_state(client, "xgb_small")
        assert state["enabled"] is True
        assert state["ttl_s"] == 30
        assert state["hit_ratio"] is None


async def test_auto_skip_reports_redis_skipped_for_a_cheap_model(
    model_repo: Path, redis_server: RedisProcess
) -> None:
    async with serving(model_repo, redis_url=redis_server.url) as client:
        state = await cache_state(client, "logreg")
        assert state["redis"].startswith("skipped")


async def test_cache_off_means_no_flush_route(model_repo: Path) -> None:
    async with serving(model_repo, cache=False) as client:
        assert await cache_state(client, "xgb_small") == {"enabled": False}
        r = await client.post("/admin/models/xgb_small/cache/flush", headers=ADMIN)
        assert r.status_code == 404


async def test_stop_waits_for_pending_redis_writes(
    model_repo: Path, redis_server: RedisProcess, rows: list[list[float]]
) -> None:
    settings = Settings(
        models_dir=model_repo,
        redis_url=redis_server.url,
        cache_redis_auto_skip=False,
        cache_memory_entries=0,
        cache_model_ttl_s=CACHED,
        monitoring=False,
    )
    ext = CacheExtension(settings)
    app = create_app(settings, extensions=[ext])
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/v1/models/logreg/predict", json={"instances": rows})
        assert r.status_code == 200
        assert ext.cache is not None
    assert ext.cache is None  # stopped: writes awaited, pool closed
    # The write made it: a fresh app (Redis only) hits every row.
    async with serving(
        model_repo,
        redis_url=redis_server.url,
        cache_redis_auto_skip=False,
        cache_memory_entries=0,
    ) as client:
        r = await client.post("/v1/models/logreg/predict", json={"instances": rows})
        assert r.status_code == 200
        assert (await cache_state(client, "logreg"))["rows_hit"] == len(rows)


async def test_a_model_cheaper_than_a_cache_miss_is_not_cached_unless_given_a_ttl(
    model_repo: Path,
) -> None:
    ext = CacheExtension(Settings(models_dir=model_repo))
    app = create_app(ext.settings, extensions=[ext])
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert ext.miss_overhead_us is not None and ext.miss_overhead_us > 0
        card = app.state.core.registry.get("logreg").card
        expected = card.cost.us_batch1 > MISS_COST_FACTOR * ext.miss_overhead_us
        assert (await cache_state(c, "logreg"))["enabled"] is expected
    async with serving(model_repo, cache_model_ttl_s={"logreg": 60}) as client:
        assert (await cache_state(client, "logreg"))["enabled"] is True


def test_worth_caching_compares_one_row_inference_with_a_miss() -> None:
    card = make_card(name="fraud")  # us_batch1 = 10
    assert worth_caching(card, Settings(), miss_overhead_us=None)  # not measured: no rule
    # Cached only when inference costs more than MISS_COST_FACTOR (3) misses measured warm.
    assert worth_caching(card, Settings(), miss_overhead_us=3.0)
    assert not worth_caching(card, Settings(), miss_overhead_us=3.4)
    assert not worth_caching(card, Settings(), miss_overhead_us=9.0)
    explicit = Settings(cache_model_ttl_s={"fraud": 30})
    assert worth_caching(card, explicit, miss_overhead_us=50.0)
    assert build_model_cache(None, card, Settings(), miss_overhead_us=1.0) is None  # cache off
