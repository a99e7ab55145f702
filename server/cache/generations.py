"""Flush generations: a number per model that is part of every key, so a flush is one increment.

Flushing a model bumps its generation; keys built afterwards live in a new namespace, so the old
entries are never read again and expire by TTL (Redis) or are dropped at once (this process's
memory tier). Nothing scans the keyspace and other models are untouched.

With Redis, the generation lives in Redis (``tabserve:gen:<model>``) so every worker and replica
sees a flush. Each process keeps the value locally and re-reads it at most every ``refresh_s``
(on the lookup path, one small round trip, bounded by the Redis timeout and skipped while the
breaker is open). **Staleness bound**: after ``flush()`` returns, other processes may answer from
the old generation for at most ``refresh_s`` plus one Redis timeout, as long as they can reach
Redis. A process that cannot reach Redis keeps its last generation and may answer from its own
memory tier until those entries expire (TTL); it cannot read Redis's old entries meanwhile.

Generations are not small counters: an absent key (new Redis, or one restarted without
persistence) is seeded with a random 48-bit number, and a flush increments from there. So a
restarted Redis never hands out a generation that an older in-memory entry was written under.
Without Redis, the generation is a plain counter in this process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from server.cache.redis import RedisCache
from server.errors import TabserveError


class FlushFailed(TabserveError):
    """The shared cache could not be reached, so other workers did not see the flush."""


class Generations:
    def __init__(
        self,
        remote: RedisCache | None = None,
        *,
        refresh_s: float = 1.0,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remote = remote
        self.refresh_s = refresh_s
        self._on_change = on_change
        self._clock = clock
        self._values: dict[str, int] = {}
        self._checked_at: dict[str, float] = {}

    def current(self, model: str) -> int:
        """The generation as last known here (no I/O)."""
        value = self._values.get(model)
        if value is None:
            value = self._values[model] = secrets.randbits(48) if self._remote else 0
        return value

    async def refresh(self, model: str) -> int:
        """Re-read the shared generation if the local one is older than ``refresh_s``."""
        if self._remote is None:
            return self.current(model)
        now = self._clock()
        checked = self._checked_at.get(model)
        if checked is not None and now - checked < self.refresh_s:
            return self._values[model]
        self._checked_at[model] = now
        seed = self.current(model)
        value = await self._remote.read_generation(model, seed)
        if value is not None:
            self._adopt(model, value)
        return self._values[model]

    async def bump(self, model: str) -> int:
        """Flush: a new generation for ``model``; raises FlushFailed if Redis was unreachable."""
        if self._remote is None:
            self._adopt(model, self.current(model) + 1)
            return self._values[model]
        value = await self._remote.bump_generation(model, secrets.randbits(48))
        if value is None:
            # This process at least forgets its own entries; Redis's are unreachable anyway.
            if self._on_change is not None:
                self._on_change(model)
            raise FlushFailed(f"cache flush of {model!r} did not reach Redis; retry")
        self._checked_at[model] = self._clock()
        self._adopt(model, value)
        return value

    def _adopt(self, model: str, value: int) -> None:
        old = self._values.get(model)
        self._values[model] = value
        if old is not None and old != value and self._on_change is not None:
            self._on_change(model)
