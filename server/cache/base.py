"""The cache contract every backend implements, and the outcome of one remote call.

Keys and values are opaque ``bytes``; a miss is ``None`` (never ``b""``). Backends never raise for
an unavailable store: a failed read is a list of misses, a failed write is dropped. The score
cache (``server.cache.batch``) builds keys and values; backends only store them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol


class CacheBackend(Protocol):
    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One value or ``None`` per key, in order."""
        ...

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        """Store every (key, value) for ``ttl_s`` seconds; best effort."""
        ...

    async def close(self) -> None:
        """Release connections and memory; the backend is not used afterwards."""
        ...


class Outcome(enum.Enum):
    """How one call to a remote tier ended; everything but OK counts as misses."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    """Not attempted: the circuit breaker is open."""
