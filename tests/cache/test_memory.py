"""The in-process LRU: bounded by entries and bytes, TTL per entry, O(1) per key."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

from server.cache.memory import ENTRY_OVERHEAD, MemoryCache

E = ENTRY_OVERHEAD


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_is_evicted_first_by_entries() -> None:
    cache = MemoryCache(max_entries=2, max_bytes=1_000)
    cache.set_many_now([(b"a", b"1"), (b"b", b"2")], 60)
    assert cache.get_many_now([b"a"]) == [b"1"]  # a is now the most recent
    cache.set_many_now([(b"c", b"3")], 60)
    assert cache.get_many_now([b"a", b"b", b"c"]) == [b"1", None, b"3"]
    assert len(cache) == 2


def test_bytes_bound_counts_keys_values_and_each_entrys_overhead() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=10 + 2 * E)
    cache.set_many_now([(b"k1", b"abc"), (b"k2", b"abc")], 60)  # 5 + 5 bytes, 2 entries
    assert cache.size_bytes == 10 + 2 * E
    cache.set_many_now([(b"k3", b"a")], 60)  # 3 more: k1 goes
    assert cache.get_many_now([b"k1", b"k2", b"k3"]) == [None, b"abc", b"a"]
    assert cache.size_bytes == 8 + 2 * E


def test_tiny_entries_are_bounded_by_what_they_hold_not_by_their_length() -> None:
    # 1-byte keys and values: counting 2 bytes each, 1,000 would have fitted this budget
    cache = MemoryCache(max_entries=1_000, max_bytes=10 * (2 + E))
    cache.set_many_now([(bytes([i]), b"v") for i in range(200)], 60)
    assert len(cache) == 10


def test_overwrite_updates_the_byte_count() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=100 + E)
    cache.set_many_now([(b"k", b"12345")], 60)
    cache.set_many_now([(b"k", b"1")], 60)
    assert cache.size_bytes == 2 + E
    assert len(cache) == 1


def test_an_entry_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=8 + E)
    cache.set_many_now([(b"small", b"1"), (b"huge", b"x" * 100)], 60)
    assert cache.get_many_now([b"small", b"huge"]) == [b"1", None]


def test_expired_entries_are_misses_and_free_their_bytes() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=10, max_bytes=100 + 2 * E, clock=clock)
    cache.set_many_now([(b"a", b"1")], ttl_s=5)
    cache.set_many_now([(b"b", b"2")], ttl_s=50)
    clock.now += 10
    assert cache.get_many_now([b"a", b"b"]) == [None, b"2"]
    assert cache.size_bytes == 2 + E


def test_non_positive_ttl_stores_nothing() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=10 * (100 + E))
    cache.set_many_now([(b"a", b"1")], ttl_s=0)
    assert cache.get_many_now([b"a"]) == [None]


def test_drop_prefix_forgets_only_matching_keys() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=10 * (100 + E))
    cache.set_many_now([(b"m1:a", b"1"), (b"m1:b", b"2"), (b"m2:a", b"3")], 60)
    assert cache.drop_prefix(b"m1:") == 2
    assert cache.get_many_now([b"m1:a", b"m2:a"]) == [None, b"3"]
    assert cache.size_bytes == len(b"m2:a") + 1 + E


def _server_like_items(first: int, n: int) -> list[tuple[bytes, bytes]]:
    """Fresh keys shaped like the server's (68 bytes: namespace + 16-byte digest), 8-byte values."""
    prefix = b"tabserve:xgb_large:1:68404a975d9ddfa5:float32x24:g0:"
    return [
        (prefix + hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).digest(), bytes(8))
        for i in range(first, first + n)
    ]


def test_never_repeating_keys_plateau_at_the_bounds() -> None:
    """A soak in miniature: 50,000 keys never seen before, in batches of 16, into a cache of
    1,000 entries; it stays at its bound and its count of bytes stays exact."""
    cache = MemoryCache(max_entries=1_000, max_bytes=1 << 30)
    for first in range(0, 50_000, 16):
        cache.set_many_now(_server_like_items(first, 16), 60)
        assert len(cache) <= 1_000
    state = cache.describe()
    assert state["entries"] == 1_000 and state["max_entries"] == 1_000
    assert state["bytes"] == 1_000 * (68 + 8 + E)
    # the newest 1,000 are the ones held
    newest = [key for key, _ in _server_like_items(49_000, 1_000)]
    assert None not in cache.get_many_now(newest)


def test_counted_bytes_are_close_to_the_memory_really_held() -> None:
    """ENTRY_OVERHEAD keeps the bytes bound honest: tracemalloc's count of what 20,000 entries
    allocate (keys and values included) is within 25% of size_bytes (113% at this size, where
    the hash table is half empty; 101% at 100,000 entries)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = MemoryCache(max_entries=100_000, max_bytes=1 << 30)
        for first in range(0, 20_000, 16):  # keys and values made here, held by the cache only
            cache.set_many_now(_server_like_items(first, 16), 60)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 < cache.size_bytes / held < 1.25


def test_a_full_cache_holds_nothing_the_collector_tracks() -> None:
    """A full cache adds an entry and evicts one per miss, which keeps the young generation's
    count flat: tracked entries would pile up in it unwalked (a long pause later). Values and
    expiry times are bytes and floats in two maps, and the maps stay in step."""
    cache = MemoryCache(max_entries=100, max_bytes=1_000_000)
    for k in range(1_000):
        cache.set_many_now([(b"key-%d" % k, b"value")], 60)
        if k % 7 == 0:
            cache.get_many_now([b"key-%d" % (k - 3)])
    cache.drop_prefix(b"key-99")
    objects = [*cache._data, *cache._data.values(), *cache._expires.values()]
    assert not any(map(gc.is_tracked, objects))
    assert set(cache._expires) == set(cache._data)
    assert len(cache._expires) == len(cache) <= 100
