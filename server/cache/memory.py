"""The in-process tier: an LRU bounded by entries and by bytes, with a TTL per entry.

Every operation is O(1) per key (an ``OrderedDict``), except :meth:`MemoryCache.drop_prefix`,
which scans and is meant for rare admin flushes (~30 ms for 100k entries on the shared dev box,
on the event loop; the flushed keys are unreachable anyway, so this only returns memory early).

The ``*_now`` methods are synchronous so the batcher's lookup needs no await (and no trip
through the event loop) when the memory tier answers; the ``async`` methods of
:class:`~server.cache.base.CacheBackend` just call them.

Expiry is lazy: an expired entry is dropped when it is read, or evicted as least recently used.

Values and expiry times live in two maps (the LRU of values, and a plain dict of floats), not in
one map of ``(value, expiry)`` tuples: a tuple is an object the garbage collector tracks, and a
full cache that adds one entry and evicts one per miss keeps the young generation's count flat,
so no young collection runs and the new tuples pile up in it, up to ``max_entries``, to be walked
in one pause when traffic changes. Bytes and floats are not tracked.

The bytes bound counts what an entry really holds: its key and value bytes plus
``ENTRY_OVERHEAD`` for the Python objects around them. With the server's ~70-byte keys and 8-byte
values an entry holds about 300 bytes, of which the key and value bytes are only a quarter: a
bound on those alone would let a 64 MB budget hold about 250 MB.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

ENTRY_OVERHEAD = 230
"""Bytes per entry beyond its key's and value's lengths: the two bytes objects' headers (2 x 33),
the expiry float and its slot in the expiry dict, and the OrderedDict's slot and link. Measured
with tracemalloc on CPython 3.11: 100,000 entries of 68-byte keys and 8-byte values hold 301
bytes each (304 when value and expiry were one tuple); counted here, 306."""


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
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._expires: dict[bytes, float] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes held: keys and values, plus ``ENTRY_OVERHEAD`` per entry."""
        return self._bytes

    def describe(self) -> dict[str, int]:
        """Size against bounds, for the model view (O(1))."""
        return {
            "entries": len(self._data),
            "max_entries": self.max_entries,
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
        }

    def get_many_now(self, keys: Sequence[bytes]) -> list[bytes | None]:
        data, expires = self._data, self._expires
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            value = data.get(key)
            if value is None:
                out.append(None)
            elif expires[key] <= now:
                del data[key], expires[key]
                self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD
                out.append(None)
            else:
                data.move_to_end(key)
                out.append(value)
        return out

    def set_many_now(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        data, expires = self._data, self._expires
        expiry = self._clock() + ttl_s
        for key, value in items:
            size = len(key) + len(value) + ENTRY_OVERHEAD
            if size > self.max_bytes:
                continue
            old = data.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old) + ENTRY_OVERHEAD
            data[key] = value
            expires[key] = expiry
            self._bytes += size
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            key, value = data.popitem(last=False)
            del expires[key]
            self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD

    def drop_prefix(self, prefix: bytes) -> int:
        """Forget every key that starts with ``prefix``; O(entries). Returns how many."""
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            value = self._data.pop(key)
            del self._expires[key]
            self._bytes -= len(key) + len(value) + ENTRY_OVERHEAD
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()
        self._expires.clear()
        self._bytes = 0

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.get_many_now(keys)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        self.set_many_now(items, ttl_s)

    async def close(self) -> None:
        self.clear()
