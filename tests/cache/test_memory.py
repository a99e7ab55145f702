"""The in-process LRU: bounded by entries and bytes, TTL per entry, O(1) per key."""

from __future__ import annotations

from server.cache.memory import MemoryCache


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


def test_bytes_bound_counts_keys_and_values() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=10)
    cache.set_many_now([(b"k1", b"abc"), (b"k2", b"abc")], 60)  # 5 + 5 bytes
    assert cache.size_bytes == 10
    cache.set_many_now([(b"k3", b"a")], 60)  # 3 more: k1 goes
    assert cache.get_many_now([b"k1", b"k2", b"k3"]) == [None, b"abc", b"a"]
    assert cache.size_bytes == 8


def test_overwrite_updates_the_byte_count() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=100)
    cache.set_many_now([(b"k", b"12345")], 60)
    cache.set_many_now([(b"k", b"1")], 60)
    assert cache.size_bytes == 2
    assert len(cache) == 1


def test_an_entry_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=8)
    cache.set_many_now([(b"small", b"1"), (b"huge", b"x" * 100)], 60)
    assert cache.get_many_now([b"small", b"huge"]) == [b"1", None]


def test_expired_entries_are_misses_and_free_their_bytes() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=10, max_bytes=100, clock=clock)
    cache.set_many_now([(b"a", b"1")], ttl_s=5)
    cache.set_many_now([(b"b", b"2")], ttl_s=50)
    clock.now += 10
    assert cache.get_many_now([b"a", b"b"]) == [None, b"2"]
    assert cache.size_bytes == 2


def test_non_positive_ttl_stores_nothing() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=100)
    cache.set_many_now([(b"a", b"1")], ttl_s=0)
    assert cache.get_many_now([b"a"]) == [None]


def test_drop_prefix_forgets_only_matching_keys() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=100)
    cache.set_many_now([(b"m1:a", b"1"), (b"m1:b", b"2"), (b"m2:a", b"3")], 60)
    assert cache.drop_prefix(b"m1:") == 2
    assert cache.get_many_now([b"m1:a", b"m2:a"]) == [None, b"3"]
    assert cache.size_bytes == len(b"m2:a") + 1
