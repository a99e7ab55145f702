"""Redis down, killed, hung or locked: the cache answers misses, never raises, and heals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from server.cache.base import Outcome
from server.cache.breaker import BreakerState
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from tests.support.redis_server import RedisProcess

ITEMS = [(b"k1", b"v1"), (b"k2", b"v2")]
KEYS = [k for k, _ in ITEMS]


async def test_redis_down_at_start_gives_misses_then_heals(redis_process: RedisProcess) -> None:
    redis_process.kill()
    cache = RedisCache(redis_process.url, timeout_s=1.0, breaker_failures=2, breaker_backoff_s=0.1)
    try:
        assert await cache.fetch(KEYS) == ([None, None], Outcome.ERROR)
        assert await cache.store(ITEMS, 60) is Outcome.ERROR
        assert cache.breaker.state is BreakerState.OPEN
        assert await cache.fetch(KEYS) == ([None, None], Outcome.SKIPPED)

        redis_process.start()
        await asyncio.sleep(0.15)
        assert await cache.store(ITEMS, 60) is Outcome.OK  # the half-open probe
        assert cache.breaker.state is BreakerState.CLOSED
        assert await cache.fetch(KEYS) == ([b"v1", b"v2"], Outcome.OK)
    finally:
        await cache.close()


async def test_kill_mid_use_opens_the_breaker_and_a_restart_heals_the_same_client(
    redis_process: RedisProcess, registry: CollectorRegistry
) -> None:
    metrics = CacheMetrics(registry)
    cache = RedisCache(
        redis_process.url,
        timeout_s=1.0,
        breaker_failures=3,
        breaker_backoff_s=0.2,
        metrics=metrics,
    )

    def circuit() -> float | None:
        return registry.get_sample_value("tabserve_cache_circuit_state", {"tier": "redis"})

    try:
        assert await cache.store(ITEMS, 60) is Outcome.OK
        assert (await cache.fetch(KEYS))[0] == [b"v1", b"v2"]
        assert circuit() == BreakerState.CLOSED

        redis_process.kill()
        outcomes = [(await cache.fetch(KEYS))[1] for _ in range(5)]
        assert outcomes[:3] == [Outcome.ERROR] * 3
        assert outcomes[3:] == [Outcome.SKIPPED] * 2  # open: the network is not touched
        assert circuit() == BreakerState.OPEN

        redis_process.start()  # same port, empty (no persistence)
        assert (await cache.fetch(KEYS))[1] is Outcome.SKIPPED  # still backing off
        await asyncio.sleep(0.25)
        assert await cache.store(ITEMS, 60) is Outcome.OK
        assert circuit() == BreakerState.CLOSED
        assert await cache.fetch(KEYS) == ([b"v1", b"v2"], Outcome.OK)
    finally:
        await cache.close()


async def test_a_failed_probe_reopens_the_breaker(redis_process: RedisProcess) -> None:
    redis_process.kill()
    cache = RedisCache(redis_process.url, timeout_s=1.0, breaker_failures=1, breaker_backoff_s=0.05)
    try:
        assert (await cache.fetch(KEYS))[1] is Outcome.ERROR
        await asyncio.sleep(0.08)
        assert (await cache.fetch(KEYS))[1] is Outcome.ERROR  # the probe, refused
        assert cache.breaker.state is BreakerState.OPEN
        assert (await cache.fetch(KEYS))[1] is Outcome.SKIPPED
    finally:
        await cache.close()


async def test_a_hung_redis_costs_each_call_at_most_about_the_timeout(
    redis_process: RedisProcess,
) -> None:
    timeout_s = 0.05
    cache = RedisCache(redis_process.url, timeout_s=timeout_s, breaker_failures=3)
    try:
        assert await cache.store(ITEMS, 60) is Outcome.OK  # a pooled, connected client
        redis_process.pause()
        for _ in range(3):
            started = time.monotonic()
            values, outcome = await cache.fetch(KEYS)
            elapsed = time.monotonic() - started
            # TIMEOUT: the call was cut by the client's timeout, not answered or failed otherwise.
            assert (values, outcome) == ([None, None], Outcome.TIMEOUT)
            # A hang detector, not a measurement (typically ~timeout_s): 40x leaves room for a
            # loaded CI machine.
            assert elapsed < 40 * timeout_s
        # SKIPPED: the breaker opened after 3 timeouts and the call did not touch the network.
        assert await cache.store(ITEMS, 60) is Outcome.SKIPPED
        redis_process.resume()
    finally:
        await cache.close()


async def test_a_timed_out_reply_is_never_read_by_the_next_command(
    redis_process: RedisProcess,
) -> None:
    """A cancelled MGET's late reply must not be taken as the answer to a later command."""
    cache = RedisCache(redis_process.url, timeout_s=0.05, breaker_failures=100, max_connections=1)
    try:
        assert await cache.store([(b"a", b"A"), (b"b", b"B")], 60) is Outcome.OK
        redis_process.pause()
        assert (await cache.fetch([b"a"]))[1] is Outcome.TIMEOUT
        assert await cache.store([(b"c", b"C")], 60) is Outcome.TIMEOUT  # a pipeline, too
        redis_process.resume()
        await asyncio.sleep(0.05)
        assert await cache.fetch([b"b"]) == ([b"B"], Outcome.OK)
        assert await cache.fetch([b"a", b"b"]) == ([b"A", b"B"], Outcome.OK)
    finally:
        await cache.close()


async def test_auth_through_the_url(redis_binary: str, tmp_path: Path) -> None:
    server = RedisProcess(redis_binary, tmp_path / "auth", args=["--requirepass", "s3cret"])
    server.start()
    good = RedisCache(f"redis://:s3cret@127.0.0.1:{server.port}/0", timeout_s=1.0)
    bad = RedisCache(f"redis://:wrong@127.0.0.1:{server.port}/0", timeout_s=1.0)
    anonymous = RedisCache(server.url, timeout_s=1.0)
    try:
        assert await good.store(ITEMS, 60) is Outcome.OK
        assert await good.fetch(KEYS) == ([b"v1", b"v2"], Outcome.OK)
        assert await bad.fetch(KEYS) == ([None, None], Outcome.ERROR)
        assert await anonymous.fetch(KEYS) == ([None, None], Outcome.ERROR)
    finally:
        for cache in (good, bad, anonymous):
            await cache.close()
        server.stop()


async def test_a_tls_url_against_a_plain_server_fails_open_quickly(
    redis_process: RedisProcess,
) -> None:
    """rediss:// speaks TLS; a handshake with a plain server is an error, not a hang."""
    cache = RedisCache(f"rediss://127.0.0.1:{redis_process.port}/0", timeout_s=0.5)
    try:
        started = time.monotonic()
        values, outcome = await cache.fetch(KEYS)
        assert values == [None, None] and outcome in {Outcome.ERROR, Outcome.TIMEOUT}
        assert time.monotonic() - started < 5.0
    finally:
        await cache.close()
