"""The cache as an app extension: one process-wide cache, one score cache per model version.

``CacheExtension(settings)`` plugs into ``server.app.create_app(..., extensions=[...])``:

- ``start(core)``: builds the cache (:func:`~server.cache.factory.build_cache`) with its metrics
  on ``core.metrics.registry``. Building never touches the network, so a Redis that is down at
  start-up only means misses (fail open) until it is up.
- ``cache_for(card)``: a :class:`~server.cache.batch.ModelScoreCache` per model version with the
  model's TTL, or None when the model is not cached: its TTL is 0, the cache is off, or its
  one-row inference costs no more than the in-process cache adds to a miss (measured in
  ``start``; :func:`~server.cache.factory.worth_caching`; a TTL set for the model overrides it).
- ``stop()`` (after every batcher drained): each score cache's pending Redis writes are awaited
  briefly, then cancelled; then the memory tier is cleared and the Redis pool closed.
- ``route_handlers()``: ``POST /admin/models/{name}/cache/flush`` (see :mod:`server.cache.routes`).

Score caches are held by weak reference: a version's batcher owns its cache, so an unloaded
version's cache goes with it (a pending write keeps it alive until the write ends).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

from litestar.types import ControllerRouterHandler

from server.batcher import ScoreCache
from server.cache.batch import ModelScoreCache
from server.cache.factory import build_cache, build_model_cache, worth_caching
from server.cache.measure import miss_overhead_us
from server.cache.tiered import TieredCache
from server.core import Core
from server.errors import CacheDisabled, ModelNotReady
from server.extension import Extension
from server.modelcard import ModelCard
from server.settings import Settings

log = logging.getLogger("tabserve.cache")


class CacheExtension(Extension):
    """Response caching (in-process, and Redis when configured) for every served model version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache: TieredCache | None = None
        self.miss_overhead_us: float | None = None
        """What the in-process cache adds to a one-row miss, measured at start (µs)."""
        self._core: Core | None = None
        self._model_caches: weakref.WeakValueDictionary[tuple[str, int], ModelScoreCache] = (
            weakref.WeakValueDictionary()
        )

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        from server.cache.routes import handlers

        return handlers(self)

    async def start(self, core: Core) -> None:
        self._core = core
        self.cache = build_cache(self.settings, core.metrics.registry)
        if self.cache is None:
            log.info("event=cache_off")
            return
        tiers = [
            name
            for name, tier in (("memory", self.cache.memory), ("redis", self.cache.remote))
            if tier is not None
        ]
        if self.cache.memory is not None:
            self.miss_overhead_us = await miss_overhead_us()
        log.info(
            "event=cache_on tiers=%s ttl_s=%s miss_overhead_us=%s",
            "+".join(tiers),
            self.settings.cache_ttl_s,
            None if self.miss_overhead_us is None else round(self.miss_overhead_us, 1),
        )

    async def stop(self) -> None:
        caches = list(self._model_caches.values())
        self._model_caches = weakref.WeakValueDictionary()
        for model_cache in caches:
            try:
                await model_cache.close()
            except Exception:
                log.exception("event=cache_close_failed model=%s", model_cache.model)
        cache, self.cache = self.cache, None
        self._core = None
        if cache is not None:
            await cache.close()

    def cache_for(self, card: ModelCard) -> ScoreCache | None:
        model_cache = build_model_cache(
            self.cache, card, self.settings, miss_overhead_us=self.miss_overhead_us
        )
        if model_cache is not None:
            self._model_caches[(card.name, card.version)] = model_cache
        elif self.cache is not None and not worth_caching(
            card, self.settings, self.miss_overhead_us
        ):
            log.info(
                "event=cache_skipped model=%s version=%d us_batch1=%.1f miss_overhead_us=%.1f "
                "reason=inference_cheaper_than_a_miss",
                card.name,
                card.version,
                card.cost.us_batch1,
                self.miss_overhead_us,
            )
        return model_cache

    async def flush(self, name: str) -> int:
        """Make every cached row of model ``name`` (all versions) unreachable; the new generation.

        Raises ModelNotFound for a model that is not served, CacheDisabled when there is no cache,
        and FlushFailed (a CacheUnavailable) when Redis could not be reached.
        """
        if self._core is None:
            raise ModelNotReady("the cache has not started")
        model = self._core.registry.get(name)  # ModelNotFound for an unknown name
        if self.cache is None:
            raise CacheDisabled("the response cache is off (TABSERVE_CACHE=false)")
        generation = await self.cache.flush(model.name)
        log.info("event=cache_flush model=%s generation=%d", model.name, generation)
        return generation
