"""A circuit breaker for the shared cache: stop calling a Redis that keeps failing, probe later.

States::

    closed ──N consecutive failures──▶ open ──backoff elapsed, next call──▶ half-open
      ▲                                 ▲                                    │
      └──────────── probe succeeds ─────┼──────────── probe fails ───────────┘

While open, :meth:`CircuitBreaker.allow` says no and the caller treats the call as a miss without
touching the network. Half-open lets exactly one call through (the probe); the others keep being
refused until the probe's outcome is known. Time is ``time.monotonic`` (injectable for tests).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Values are what the ``tabserve_cache_circuit_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures; not thread-safe (one event loop owns it)."""

    def __init__(
        self,
        failures: int,
        backoff_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.failures_to_open = failures
        self.backoff_s = backoff_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The state as of the last call; an open breaker past its backoff still says OPEN."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def allow(self) -> bool:
        """May the caller use the backend now? True at most once per backoff while not closed."""
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.backoff_s:
            self._set(BreakerState.HALF_OPEN)
            return True
        return False

    def success(self) -> None:
        self._consecutive = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._consecutive >= self.failures_to_open
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def abandon(self) -> None:
        """An allowed call ended without an outcome (cancelled): let the next call probe at once."""
        if self._state is BreakerState.HALF_OPEN:
            self._opened_at = self._clock() - self.backoff_s
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
