"""Memory first, then Redis for what memory lacked; Redis hits are copied into memory.

:class:`TieredCache` is the cache object the server holds (one per process, built by
:func:`server.cache.factory.build_cache`). It is a :class:`~server.cache.base.CacheBackend`, and
offers what the per-model score cache needs beyond that contract: per-tier counts and the remote
call's outcome (:meth:`fetch`), a synchronous memory write (:meth:`store_memory`), the remote
write on its own (:meth:`store_remote`), flush generations and :meth:`flush`.

Either tier may be absent: memory only is the embedded default; Redis only when the in-process
tier is sized to zero.

Promotion: a Redis hit is written into memory with ``promote_ttl_s``, so an entry can outlive its
Redis expiry by up to that long (at most twice the TTL in all). Values are deterministic functions
of the key, so this only bounds memory, not correctness; flushes do not depend on TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.cache.base import Outcome
from server.cache.generations import Generations
from server.cache.keys import model_prefix
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache


@dataclass(slots=True)
class Fetch:
    """The result of looking up one batch of keys in both tiers."""

    values: list[bytes | None]
    memory_hits: int = 0
    remote_asked: int = 0
    """Keys sent to Redis (memory misses), 0 if Redis was not consulted."""
    remote_hits: int = 0
    remote_outcome: Outcome | None = None
    """None when Redis was not called (absent, not wanted, or memory answered everything)."""


class TieredCache:
    def __init__(
        self,
        memory: MemoryCache | None,
        remote: RedisCache | None,
        *,
        promote_ttl_s: float,
        metrics: CacheMetrics | None = None,
        generation_refresh_s: float = 1.0,
    ) -> None:
        self.memory = memory
        self.remote = remote
        self.promote_ttl_s = promote_ttl_s
        self.metrics = metrics
        self.generations = Generations(
            remote, refresh_s=generation_refresh_s, on_change=self._forget_model
        )

    # --- the CacheBackend contract -------------------------------------------------------------

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return (await self.fetch(keys)).values

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        self.store_memory(items, ttl_s)
        await self.store_remote(items, ttl_s)

    async def close(self) -> None:
        await self.generations.close()
        if self.memory is not None:
            self.memory.clear()
        if self.remote is not None:
            await self.remote.close()

    # --- beyond the contract -------------------------------------------------------------------

    async def fetch(
        self,
        keys: Sequence[bytes],
        *,
        use_remote: bool = True,
        remote_min_keys: int = 1,
        promote_ttl_s: float | None = None,
    ) -> Fetch:
        """Memory (synchronously), then one Redis MGET for the memory misses; promotes Redis hits.

        Redis is asked only when at least ``remote_min_keys`` keys missed memory. Never suspends
        when memory answers every key or Redis is absent/unwanted.
        """
        if self.memory is not None:
            values = self.memory.get_many_now(keys)
            result = Fetch(values, memory_hits=len(keys) - values.count(None))
        else:
            result = Fetch([None] * len(keys))
        if self.remote is None or not use_remote:
            return result
        if len(keys) - result.memory_hits < max(1, remote_min_keys):
            return result
        missing = [i for i, value in enumerate(result.values) if value is None]
        remote_values, outcome = await self.remote.fetch([keys[i] for i in missing])
        result.remote_asked = len(missing)
        result.remote_outcome = outcome
        promoted: list[tuple[bytes, bytes]] = []
        for i, value in zip(missing, remote_values, strict=True):
            if value is not None:
                result.values[i] = value
                promoted.append((keys[i], value))
        result.remote_hits = len(promoted)
        if promoted and self.memory is not None:
            ttl = self.promote_ttl_s if promote_ttl_s is None else promote_ttl_s
            self.memory.set_many_now(promoted, ttl)
        return result

    def store_memory(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        if self.memory is not None:
            self.memory.set_many_now(items, ttl_s)

    async def store_remote(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> Outcome:
        if self.remote is None:
            return Outcome.OK
        return await self.remote.store(items, ttl_s)

    async def flush(self, model: str) -> int:
        """Make all cached rows of ``model`` (every version) unreachable; return the new generation.

        Clears this process's memory tier for the model at once; other processes stop using the
        old generation within the bound documented in :mod:`server.cache.generations`. Raises
        :class:`~server.cache.generations.FlushFailed` when Redis could not be reached.
        """
        return await self.generations.bump(model)

    def _forget_model(self, model: str) -> None:
        if self.memory is not None:
            self.memory.drop_prefix(model_prefix(model))
