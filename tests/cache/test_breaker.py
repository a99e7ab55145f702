"""The circuit breaker's states, on an injected clock (no sleeping)."""

from __future__ import annotations

from server.cache.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(3, 1.0, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the streak
    breaker.failure()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()


def test_half_open_lets_one_probe_through_after_the_backoff() -> None:
    clock = Clock()
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(1, 2.0, clock=clock, on_change=seen.append)
    breaker.failure()
    clock.now = 1.9
    assert not breaker.allow()
    clock.now = 2.0
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_backs_off_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.failure()
    clock.now = 2.0
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 3.9
    assert not breaker.allow()
    clock.now = 4.0
    assert breaker.allow()


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.failure()
    clock.now = 2.0
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
