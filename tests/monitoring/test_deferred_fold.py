"""On a running event loop, observe schedules the fold and the status evaluation, in steps.

The fold due every ``fold_rows`` rows runs after the triggering call returns, in steps of at most
``FOLD_STEP_BATCHES`` batches, one per loop turn; reads fold whatever still waits; off the loop,
and past the backlog cap, observe folds inline as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from export.data import make_fraud
from server.activity import ACTIVITY
from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams
from server.monitoring.monitor import FOLD_BACKLOG_FACTOR, FOLD_STEP_BATCHES, FOLD_STEP_YIELDS
from tests.monitoring.cards import class_scores, fake_fraud_scores
from tests.monitoring.conftest import FakeClock

FOLD_ROWS = MonitorParams().fold_rows
NO_STATUS = MonitorParams(status_interval_s=1e9)
"""No periodic status evaluation: only the fold is scheduled."""


def traffic(n: int, *, seed: int = 31, shift: float = 0.0) -> tuple[NDArray[Any], NDArray[Any]]:
    X, _, names = make_fraud(n, seed=seed, shift=shift)
    return X, class_scores(fake_fraud_scores(X, names))


def observe_rows(monitor: ModelMonitor, X: NDArray[Any], scores: NDArray[Any], tag: str) -> None:
    """One one-row batch per row, request ids ``{tag}{i}``."""
    for i in range(len(X)):
        monitor.observe(X[i : i + 1], scores[i : i + 1], [(f"{tag}{i}", 0, 1)])


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_trigger_schedules_the_fold_in_steps(fraud_card: ModelCard) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS)
    observe_rows(monitor, X, scores, "r")
    assert monitor.rows_total == 0  # the triggering call returned before anything was folded
    assert FOLD_ROWS % FOLD_STEP_BATCHES == 0
    for step in range(1, FOLD_ROWS // FOLD_STEP_BATCHES + 1):
        await turns(1)
        assert monitor.rows_total == step * FOLD_STEP_BATCHES
        assert monitor.batches_total == step * FOLD_STEP_BATCHES
    await turns(5)
    assert monitor.rows_total == FOLD_ROWS
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == FOLD_ROWS
    assert snap["observed"]["rows_total"] == FOLD_ROWS
    assert snap["observed"]["feedback_rows_remembered"] == FOLD_ROWS
    assert monitor.errors == 0


def _snapshot(m: ModelMonitor) -> None:
    m.snapshot()


def _state(m: ModelMonitor) -> None:
    m.state()


def _flush(m: ModelMonitor) -> None:
    m.flush()


def _feedback(m: ModelMonitor) -> None:
    m.feedback(request_id=f"r{FOLD_ROWS - 1}", label=1)  # the last row handed to the steps


@pytest.mark.parametrize("read", [_snapshot, _state, _flush, _feedback])
@pytest.mark.parametrize("steps_first", [0, 1])
async def test_a_read_folds_everything_once(
    fraud_card: ModelCard, read: Callable[[ModelMonitor], None], steps_first: int
) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS + 10)
    observe_rows(monitor, X[:FOLD_ROWS], scores[:FOLD_ROWS], "r")
    await turns(steps_first)  # none, or one step already folded its share
    observe_rows(monitor, X[FOLD_ROWS:], scores[FOLD_ROWS:], "late")  # pending, not handed over
    read(monitor)
    expected = FOLD_ROWS + 10
    assert monitor.rows_total == expected
    await turns(10)  # the steps still scheduled find nothing left
    assert monitor.rows_total == expected
    snap = monitor.snapshot()
    assert snap["window"]["rows"] == expected
    assert snap["observed"]["batches_total"] == expected
    assert snap["observed"]["feedback_rows_remembered"] == expected
    assert monitor.errors == 0


async def test_a_read_folds_in_arrival_order(fraud_card: ModelCard, clock: FakeClock) -> None:
    params = MonitorParams(drift_window_s=30.0, status_interval_s=1e9)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    X, scores = traffic(FOLD_ROWS + 10)
    observe_rows(monitor, X[:FOLD_ROWS], scores[:FOLD_ROWS], "early")  # handed to the steps
    clock.advance(20.0)
    observe_rows(monitor, X[FOLD_ROWS:], scores[FOLD_ROWS:], "late")  # pending
    clock.advance(20.0)  # the early rows are 40 s old, the late ones 20 s
    window = monitor.snapshot()["window"]
    assert window["rows"] == 10
    assert window["seconds"] == 20.0
    assert monitor.rows_total == FOLD_ROWS + 10
    await turns(10)
    assert monitor.snapshot()["window"]["rows"] == 10
    assert monitor.rows_total == FOLD_ROWS + 10


def test_later_arrivals_fold_after_earlier_ones(fraud_card: ModelCard) -> None:
    """Batches observed while the steps are still due, and a malformed one among them, end up
    exactly as when every batch is folded at once, arrival times (and so expiry) included."""
    params = MonitorParams(
        drift_window_rows=5_000, drift_window_s=30.0, drift_min_rows=100, status_interval_s=1e9
    )
    clocks = FakeClock(), FakeClock()
    deferred, eager = (
        ModelMonitor(fraud_card, p, clock=c, wall_clock=lambda: 0.0)
        for p, c in zip((params, replace(params, fold_rows=1)), clocks, strict=True)
    )
    X, scores = traffic(1_500, seed=32, shift=0.5)
    bad = (np.zeros((1, 3), dtype=np.float32), scores[:1], [("bad", 0, 1)])
    feeds: list[Callable[[ModelMonitor], None]] = []
    for k, start in enumerate(range(0, len(X), 150)):
        rows, sc = X[start : start + 150], scores[start : start + 150]
        feeds.append(lambda m, rows=rows, sc=sc, k=k: observe_rows(m, rows, sc, f"b{k}-"))
    feeds.insert(3, lambda m: m.observe(*bad))

    async def on_the_loop() -> None:
        for i, feed in enumerate(feeds):
            feed(deferred)
            clocks[0].advance(4.0)  # over 44 s: the first rows leave the 30 s window
            await turns(i % 3)  # some feeds while earlier steps are still due
            if i % 4 == 1:  # not after the last feed
                deferred.state()  # a read between: it folds what waits, in arrival order
        await turns(40)

    asyncio.run(on_the_loop())
    # every batch but the last feed's 150 (still pending: under fold_rows since the last read)
    assert deferred.rows_total + deferred.rejected_batches == len(X) + 1 - 150
    for feed in feeds:  # the same arrival times, off the loop, each batch folded at once
        feed(eager)
        clocks[1].advance(4.0)
    assert eager.rows_total == len(X)
    assert deferred.rejected_batches == eager.rejected_batches == 1
    assert deferred.snapshot() == eager.snapshot()
    assert 0 < deferred.snapshot()["window"]["rows"] < len(X)  # time did expire rows
    assert deferred.errors == eager.errors == 0


def test_off_the_loop_the_fold_is_inline(fraud_card: ModelCard) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS)
    observe_rows(monitor, X[:-1], scores[:-1], "r")
    assert monitor.rows_total == 0
    observe_rows(monitor, X[-1:], scores[-1:], "last")
    assert monitor.rows_total == FOLD_ROWS


async def test_another_thread_folds_inline_while_the_loop_runs(fraud_card: ModelCard) -> None:
    """The shadow thread's case: no running loop on that thread, so observe folds inline."""
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS)
    await asyncio.to_thread(observe_rows, monitor, X, scores, "s")
    assert monitor.rows_total == FOLD_ROWS  # before this loop took another turn


async def test_concurrent_thread_and_loop_count_every_row_once(fraud_card: ModelCard) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS, clock=FakeClock())  # one arrival time
    X, scores = traffic(4_000, seed=33)
    thread = threading.Thread(target=observe_rows, args=(monitor, X[:2_000], scores[:2_000], "t"))
    thread.start()
    for start in range(2_000, 4_000, 20):
        observe_rows(monitor, X[start : start + 20], scores[start : start + 20], f"l{start}-")
        await turns(1)
    await asyncio.to_thread(thread.join)
    await turns(40)
    monitor.flush()
    assert monitor.rows_total == monitor.batches_total == 4_000
    assert monitor.snapshot()["observed"]["feedback_rows_remembered"] == 4_000
    assert monitor.errors == 0


async def test_a_backlog_the_loop_does_not_get_to_is_folded_inline(fraud_card: ModelCard) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    cap = FOLD_BACKLOG_FACTOR * FOLD_ROWS
    X, scores = traffic(cap)
    observe_rows(monitor, X[:-1], scores[:-1], "r")  # no loop turn in between
    assert monitor.rows_total == 0
    observe_rows(monitor, X[-1:], scores[-1:], "last")
    assert monitor.rows_total == cap
    await turns(5)
    assert monitor.rows_total == cap
    assert monitor.errors == 0


def test_steps_left_on_a_stopped_loop_are_taken_over(fraud_card: ModelCard) -> None:
    """A loop that stopped with steps still scheduled (and was closed): the next loop's trigger
    schedules its own steps, which fold what the old ones left too."""
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(2 * FOLD_ROWS)

    async def trigger(part: slice, tag: str) -> None:
        observe_rows(monitor, X[part], scores[part], tag)

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(trigger(slice(0, FOLD_ROWS), "a"))  # stops after one step
    finally:
        first.close()
    assert 0 < monitor.rows_total < FOLD_ROWS

    async def second() -> None:
        await trigger(slice(FOLD_ROWS, None), "b")
        await turns(20)

    asyncio.run(second())
    assert monitor.rows_total == 2 * FOLD_ROWS
    assert monitor.errors == 0


async def test_status_evaluation_is_deferred_on_the_loop(
    fraud_card: ModelCard, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    params = MonitorParams(drift_min_rows=100, status_interval_s=1.0, fold_rows=100_000)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    caplog.set_level(logging.INFO, logger="server.monitoring")
    X, scores = traffic(300, seed=34, shift=1.0)
    observe_rows(monitor, X[:-1], scores[:-1], "r")  # 299 one-row batches, no fold due
    clock.advance(2.0)
    observe_rows(monitor, X[-1:], scores[-1:], "last")  # the status check is due
    assert monitor.status == "insufficient_data"  # not evaluated inline
    assert monitor.rows_total == 0
    for _ in range(20):
        before = monitor.rows_total
        await turns(1)
        assert monitor.rows_total - before <= FOLD_STEP_BATCHES  # folded in steps first
        if monitor.status != "insufficient_data":
            break
    assert monitor.status == "drift"
    assert monitor.rows_total == 300
    entered = [r for r in caplog.records if "entered drift" in r.getMessage()]
    assert len(entered) == 1
    await turns(5)  # not evaluated again before the next interval
    assert len([r for r in caplog.records if "entered drift" in r.getMessage()]) == 1
    assert monitor.errors == 0


def test_off_the_loop_the_status_is_evaluated_inline(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    params = MonitorParams(drift_min_rows=100, status_interval_s=1.0, fold_rows=100_000)
    monitor = ModelMonitor(fraud_card, params, clock=clock)
    X, scores = traffic(300, seed=34, shift=1.0)
    observe_rows(monitor, X[:-1], scores[:-1], "r")
    clock.advance(2.0)
    observe_rows(monitor, X[-1:], scores[-1:], "last")
    assert monitor.status == "drift"
    assert monitor.rows_total == 300


async def test_a_step_lets_a_request_read_since_it_was_queued_go_first(
    fraud_card: ModelCard,
) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS)
    observe_rows(monitor, X, scores, "r")
    ACTIVITY.reads += 1  # a request's bytes were read after the step was queued
    await turns(1)
    assert monitor.rows_total == 0  # the step queued itself again, behind that request
    await turns(1)
    assert monitor.rows_total == FOLD_STEP_BATCHES  # nothing read since: it ran
    await turns(FOLD_ROWS // FOLD_STEP_BATCHES)
    assert monitor.rows_total == FOLD_ROWS
    assert monitor.errors == 0


async def test_under_constant_reads_a_step_still_runs(fraud_card: ModelCard) -> None:
    monitor = ModelMonitor(fraud_card, NO_STATUS)
    X, scores = traffic(FOLD_ROWS)
    observe_rows(monitor, X, scores, "r")
    for _ in range(FOLD_STEP_YIELDS):
        ACTIVITY.reads += 1
        await turns(1)
        assert monitor.rows_total == 0
    ACTIVITY.reads += 1  # reads again: the step has yielded as often as it may, and runs
    await turns(1)
    assert monitor.rows_total == FOLD_STEP_BATCHES
