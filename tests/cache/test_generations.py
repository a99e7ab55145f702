"""Flush generations in Redis: shared, seeded once, continuous across a Redis restart."""

from __future__ import annotations

import asyncio

from server.cache.generations import Generations
from server.cache.redis import RedisCache
from tests.support.redis_server import RedisProcess


async def test_workers_agree_and_a_restart_keeps_the_generation(
    redis_process: RedisProcess,
) -> None:
    clients = [RedisCache(redis_process.url, timeout_s=1.0, breaker_failures=100) for _ in "abc"]
    a, b, c = (Generations(client, refresh_s=0.0) for client in clients)
    try:
        first = await a.refresh("m")
        assert await b.refresh("m") == first  # b's own random seed lost the SET NX race

        redis_process.kill()
        redis_process.start()  # empty: the generation key is gone
        assert await b.refresh("m") == first  # keeps going; re-reads (and re-seeds) in background
        for _ in range(200):
            if redis_process.command("GET", "tabserve:gen:m") != b"$-1\r\n":
                break
            await asyncio.sleep(0.01)
        assert await c.refresh("m") == first  # a newcomer finds the same generation

        flushed = await a.bump("m")
        assert flushed == first + 1 and a.current("m") == flushed
    finally:
        for gens in (a, b, c):
            await gens.close()
        for client in clients:
            await client.close()


async def test_without_redis_a_flush_is_a_local_counter() -> None:
    changed: list[str] = []
    gens = Generations(None, on_change=changed.append)
    assert await gens.refresh("m") == 0
    assert await gens.bump("m") == 1
    assert await gens.refresh("m") == 1 and changed == ["m"]
