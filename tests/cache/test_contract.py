"""One contract, every backend: in-process memory, real Redis, and memory in front of Redis."""

from __future__ import annotations

import asyncio
import os

import pytest

from server.cache.base import CacheBackend
from server.cache.memory import MemoryCache
from server.cache.redis import RedisCache
from server.cache.tiered import TieredCache


@pytest.fixture(params=["memory", "redis", "tiered", "tiered-redis-only"])
def backend(
    request: pytest.FixtureRequest,
) -> CacheBackend:
    if request.param == "memory":
        return MemoryCache(10_000, 16 * 1024 * 1024)
    if request.param == "redis":
        cache: RedisCache = request.getfixturevalue("redis_cache")
        return cache
    if request.param == "tiered-redis-only":
        remote: RedisCache = request.getfixturevalue("redis_cache")
        return TieredCache(None, remote, promote_ttl_s=60)  # closed with redis_cache
    tiered: TieredCache = request.getfixturevalue("tiered")
    return tiered


async def test_set_then_get_returns_the_values_in_key_order(
    backend: CacheBackend, key_prefix: bytes
) -> None:
    items = [(key_prefix + b"a", b"1"), (key_prefix + b"b", b"22")]
    await backend.set_many(items, ttl_s=60)
    got = await backend.get_many([key_prefix + b"b", key_prefix + b"a"])
    assert got == [b"22", b"1"]


async def test_a_missing_key_is_none_among_hits(backend: CacheBackend, key_prefix: bytes) -> None:
    await backend.set_many([(key_prefix + b"here", b"v")], ttl_s=60)
    got = await backend.get_many([key_prefix + b"absent", key_prefix + b"here"])
    assert got == [None, b"v"]


async def test_empty_calls_are_fine(backend: CacheBackend) -> None:
    assert await backend.get_many([]) == []
    await backend.set_many([], ttl_s=60)


async def test_set_overwrites(backend: CacheBackend, key_prefix: bytes) -> None:
    key = key_prefix + b"k"
    await backend.set_many([(key, b"old")], ttl_s=60)
    await backend.set_many([(key, b"new")], ttl_s=60)
    assert await backend.get_many([key]) == [b"new"]


async def test_entries_expire_after_their_ttl(backend: CacheBackend, key_prefix: bytes) -> None:
    await backend.set_many([(key_prefix + b"short", b"v")], ttl_s=0.15)
    await backend.set_many([(key_prefix + b"long", b"v")], ttl_s=60)
    await asyncio.sleep(0.4)
    assert await backend.get_many([key_prefix + b"short", key_prefix + b"long"]) == [None, b"v"]


async def test_large_values_round_trip(backend: CacheBackend, key_prefix: bytes) -> None:
    value = os.urandom(1024 * 1024)
    await backend.set_many([(key_prefix + b"big", value)], ttl_s=60)
    assert await backend.get_many([key_prefix + b"big"]) == [value]


async def test_many_keys_in_one_call(backend: CacheBackend, key_prefix: bytes) -> None:
    items = [(key_prefix + i.to_bytes(4, "big"), os.urandom(8)) for i in range(5_000)]
    await backend.set_many(items, ttl_s=60)
    got = await backend.get_many([k for k, _ in items])
    assert got == [v for _, v in items]


async def test_keys_and_values_are_binary_safe(backend: CacheBackend, key_prefix: bytes) -> None:
    nasty = [b"\x00", b"\r\n", b"\xff\xfe", b" space", b"*3\r\n$3\r\nSET", bytes(range(256))]
    items = [(key_prefix + k, k[::-1] + b"\x00") for k in nasty]
    await backend.set_many(items, ttl_s=60)
    assert await backend.get_many([k for k, _ in items]) == [v for _, v in items]


async def test_an_empty_value_is_a_hit_not_a_miss(backend: CacheBackend, key_prefix: bytes) -> None:
    await backend.set_many([(key_prefix + b"e", b"")], ttl_s=60)
    assert await backend.get_many([key_prefix + b"e"]) == [b""]
