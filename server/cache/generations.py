"""Flush generations: a number per model that is part of every key, so a flush is one increment.

Flushing a model bumps its generation; keys built afterwards live in a new namespace, so the old
entries are never read again and expire by TTL (Redis) or are dropped at once (this process's
memory tier). Nothing scans the keyspace and other models are untouched.

With Redis, the generation lives in Redis (``tabserve:gen:<model>``) so every worker and replica
sees a flush. Each process keeps the value locally; a lookup finding it older than
``refresh_s`` starts a background re-read (one small round trip, bounded by the Redis timeout,
skipped while the breaker is open) and goes on with the value it has. **Staleness bound**: after
``flush()`` returns, another process may answer from the old generation for at most ``refresh_s``
plus one Redis round trip after its next lookup, as long as it can reach Redis (with steady
traffic: about ``refresh_s``). A process that cannot reach Redis keeps its last generation and
may answer from its own memory tier until those entries expire (TTL); it cannot read Redis's old
entries meanwhile.

Generations are not small counters that restart at 0: an absent key (new Redis, or one restarted
without persistence) is seeded (``SET NX``) with the reading process's current generation, or a
random 48-bit number for a process that has none yet, and a flush increments from there. So the
keys in use survive a Redis restart, and a restart never brings back a generation that was
flushed, except through a process that had not yet seen that flush (within the bound above).
Without Redis, the generation is a plain counter in this process.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from server.cache.redis import RedisCache
from server.errors import CacheUnavailable


class FlushFailed(CacheUnavailable):
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
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._epochs: dict[str, int] = {}

    def current(self, model: str) -> int:
        """The generation as last known here (no I/O)."""
        value = self._values.get(model)
        if value is None:
            value = self._values[model] = secrets.randbits(48) if self._remote else 0
        return value

    def memo_token(self, model: str) -> tuple[int, int] | None:
        """For answers that skip the lookup (the response memo): (generation, flushes tried
        here), known current without I/O -- always without Redis, else only within
        ``refresh_s`` of the last re-read (None otherwise: a lookup's :meth:`refresh` re-reads
        it). Every flush changes it, even one that could not reach Redis."""
        if self._remote is None:
            return self.current(model), 0
        checked = self._checked_at.get(model)
        if checked is None or self._clock() - checked >= self.refresh_s:
            return None
        return self._values[model], self._epochs.get(model, 0)

    async def refresh(self, model: str) -> int:
        """The generation to use now; re-reads the shared one if older than ``refresh_s``.

        The first call for a model waits for Redis (bounded by its timeout), so even the first
        batch shares keys with the other workers; later re-reads run in the background and never
        delay a lookup.
        """
        if self._remote is None:
            return self.current(model)
        now = self._clock()
        checked = self._checked_at.get(model)
        if checked is not None and now - checked < self.refresh_s:
            return self._values[model]
        self._checked_at[model] = now
        if checked is None:
            await self._read(model)
        elif model not in self._refreshing:
            task = asyncio.create_task(self._read(model))
            self._refreshing[model] = task
            task.add_done_callback(lambda _: self._refreshing.pop(model, None))
        return self._values[model]

    async def _read(self, model: str) -> None:
        assert self._remote is not None
        epoch = self._epochs.get(model, 0)
        value = await self._remote.read_generation(model, self.current(model))
        # A read that raced with this process's own flush must not undo it.
        if value is not None and self._epochs.get(model, 0) == epoch:
            self._adopt(model, value)

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def bump(self, model: str) -> int:
        """Flush: a new generation for ``model``; raises FlushFailed if Redis was unreachable."""
        if self._remote is None:
            self._adopt(model, self.current(model) + 1)
            return self._values[model]
        self._epochs[model] = self._epochs.get(model, 0) + 1
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
