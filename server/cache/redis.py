"""The shared tier: Redis (or Valkey) through redis-py asyncio with hiredis and a connection pool.

Fail open: every call is bounded by ``timeout_s`` (``asyncio.timeout`` around the call, plus the
socket timeouts), only a broken pooled connection is retried (once, at once), and any error or
timeout is returned as misses and reported to the circuit breaker. While the breaker is open,
calls are skipped without touching the network. The client object lives for the whole process:
the pool reconnects on its own after Redis restarts, so nothing needs rebuilding.

A cancelled call (the timeout) closes its connection, so a late reply is never read by the next
command. Auth and TLS come from the URL: ``redis://user:password@host:6379/0``, ``rediss://...``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.cache.base import Outcome
from server.cache.breaker import BreakerState, CircuitBreaker
from server.cache.metrics import REDIS, CacheMetrics

T = TypeVar("T")

GENERATION_KEY = "tabserve:gen:{model}"


class RedisCache:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        breaker_failures: int = 5,
        breaker_backoff_s: float = 2.0,
        max_connections: int = 32,
        metrics: CacheMetrics | None = None,
        initial_rtt_us: float = 100.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.rtt_us = initial_rtt_us
        """Moving average of successful MGET round trips (µs), for the per-model skip rule.
        Starts at ``initial_rtt_us`` (a loopback MGET measured ~100 µs on a shared 2-core box)."""
        self._metrics = metrics
        on_change: Callable[[BreakerState], None] | None = None
        if metrics is not None:
            gauge = metrics.circuit_state.labels(REDIS)
            gauge.set(int(BreakerState.CLOSED))
            on_change = lambda state: gauge.set(int(state))  # noqa: E731
        self.breaker = CircuitBreaker(breaker_failures, breaker_backoff_s, on_change=on_change)
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry, on connection errors only: after a Redis restart a pooled
            # connection fails once ("closed by server") and the retry reconnects. Timeouts are
            # not retried; asyncio.timeout bounds the whole call either way.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            max_connections=max_connections,
            health_check_interval=0,
        )

    # --- the CacheBackend contract ---------------------------------------------------------------

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        values, _ = await self.fetch(keys)
        return values

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> None:
        await self.store(items, ttl_s)

    async def close(self) -> None:
        await self._client.aclose()

    # --- with outcomes, for callers that count them --------------------------------------------

    async def fetch(self, keys: Sequence[bytes]) -> tuple[list[bytes | None], Outcome]:
        """One MGET for all keys; on any failure every key is a miss."""
        if not keys:
            return [], Outcome.OK
        outcome, values = await self._call("get", lambda: self._mget(keys))
        if values is None:
            return [None] * len(keys), outcome
        return values, outcome

    async def store(self, items: Sequence[tuple[bytes, bytes]], ttl_s: float) -> Outcome:
        """One pipelined round trip of ``SET key value PX ttl`` per item (no transaction)."""
        ttl_ms = int(ttl_s * 1000)
        if not items or ttl_ms <= 0:
            return Outcome.OK
        outcome, _ = await self._call("set", lambda: self._set_pipeline(items, ttl_ms))
        return outcome

    async def read_generation(self, model: str, seed: int) -> int | None:
        """The model's flush generation, seeded with ``seed`` if absent (new or restarted Redis)."""
        return await self._seeded_generation("generation", model, seed, increment=False)

    async def bump_generation(self, model: str, seed: int) -> int | None:
        """INCR the model's generation (seeded first if absent); None if Redis was unreachable."""
        return await self._seeded_generation("flush", model, seed, increment=True)

    async def _seeded_generation(
        self, op: str, model: str, seed: int, *, increment: bool
    ) -> int | None:
        """``SET key seed NX`` then ``GET`` or ``INCR`` in one round trip; None on failure."""
        key = GENERATION_KEY.format(model=model)

        async def run() -> Any:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, seed, nx=True)
                if increment:
                    pipe.incr(key)
                else:
                    pipe.get(key)
                return await pipe.execute()

        _, replies = await self._call(op, run)
        return None if replies is None else int(replies[1])

    # --- internals --------------------------------------------------------------------------------

    async def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        # decode_responses is off, so the replies are bytes or None.
        return cast("list[bytes | None]", await self._client.mget(keys))

    async def _set_pipeline(self, items: Sequence[tuple[bytes, bytes]], ttl_ms: int) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(key, value, px=ttl_ms)
            await pipe.execute()

    async def _call(self, op: str, run: Callable[[], Awaitable[T]]) -> tuple[Outcome, T | None]:
        if not self.breaker.allow():
            return Outcome.SKIPPED, None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await run()
        except (TimeoutError, RedisTimeoutError):
            outcome, result_or_none = Outcome.TIMEOUT, None
        except (RedisError, OSError):
            outcome, result_or_none = Outcome.ERROR, None
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        else:
            outcome, result_or_none = Outcome.OK, result
        if outcome is Outcome.OK:
            self.breaker.success()
            elapsed = time.perf_counter() - started
            if op == "get":
                self.rtt_us += 0.05 * (elapsed * 1e6 - self.rtt_us)
            if self._metrics is not None:
                self._metrics.roundtrip.labels(REDIS, op).observe(elapsed)
        else:
            self.breaker.failure()
        return outcome, result_or_none

    @property
    def circuit_state(self) -> BreakerState:
        return self.breaker.state
