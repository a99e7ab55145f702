"""The in-process tier: an LRU bounded by entries and by bytes, with a TTL per entry.

Every operation is O(1) per key (an ``OrderedDict``), except :meth:`MemoryCache.drop_prefix`,
which scans and is meant for rare admin flushes (~30 ms for 100k entries on the shared dev box,
on the event loop; the flushed keys are unreachable anyway, so this only returns memory early).

The ``*_now`` methods are synchronous so the batcher's lookup needs no await (and no trip
through the event loop) when the memory tier answers; the ``async`` methods of
:class:`~server.cache.base.CacheBackend` just call them.

Expiry is lazy: an expired entry is dropped when it is read, or evicted as least recently used.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence


class MemoryCache:
    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes of the keys and values held (Python object overhead not counted)."""
        return self._bytes

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None]:
        data = self._data
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            entry = data.get(key)
            if entry is None:
                out.append(None)
            elif entry[1] <= now:
                del data[key]
                self._bytes -= len(key) + len(entry[0])
                out.append(None)
            else:
                data.move_to_end(key)
                out.append(entry[0])
        return out

    def set_many_now(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        data = self._data
        expires = self._clock() + ttl_s
        for key, value in items:
            size = len(key) + len(value)
            if size > self.max_bytes:
                continue
            old = data.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[0])
            data[key] = (value, expires)
            self._bytes += size
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            key, (value, _) = data.popitem(last=False)
            self._bytes -= len(key) + len(value)

    def drop_prefix(self, prefix: bytes) -> int:
        """Forget every key that starts with ``prefix``; O(entries). Returns how many."""
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            value, _ = self._data.pop(key)
            self._bytes -= len(key) + len(value)
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.get_many_now(keys)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        self.set_many_now(items, ttl_s)

    async def close(self) -> None:
        self.clear()
