"""The tail timeline's hold-ups: late requests grouped by send time, with what the server did."""

from __future__ import annotations

import pytest

from loadtests.bench.tail_timeline import SchedSampler, holdups

MS = 1_000_000


def test_late_requests_close_in_time_make_one_holdup_and_far_ones_another() -> None:
    times = [(t * MS, t * MS + MS, t % 4) for t in range(0, 1000, 2)]  # on time: 1 ms each
    # A stall at 100 ms: the requests due in the next 30 ms on all four connections wait for it.
    times += [(t * MS, 140 * MS, k % 4) for k, t in enumerate(range(101, 131, 2))]
    # One late request on one connection, long after.
    times.append((601 * MS, 626 * MS, 1))
    found = holdups(times, slow_ns=5 * MS)
    assert len(found) == 2
    first, second = found
    assert first.began_ns == 101 * MS and first.last_sent_ns == 129 * MS
    assert first.requests == 15 and first.connections == 4
    assert first.worst_ms == pytest.approx(39.0)
    assert first.last_answer_ns == 140 * MS
    # Answers while it lasted: the 15 held ones and the on-time ones answered from 101 to 140 ms.
    on_time = sum(1 for s, e, _ in times if 101 * MS <= e <= 140 * MS and e - s <= MS)
    assert first.answers_per_s == pytest.approx((15 + on_time) / 39e-3)
    assert (second.requests, second.connections, second.worst_ms) == (1, 1, 25.0)


def test_no_holdup_when_nothing_is_late() -> None:
    assert holdups([(0, MS, 0), (2 * MS, 3 * MS, 1)], slow_ns=5 * MS) == []


def test_shares_of_time_on_a_cpu_and_waiting_for_one() -> None:
    sampler = SchedSampler(pid=0)
    # (time, ns on a CPU, ns runnable but waiting): half on a CPU, a tenth waiting.
    sampler.samples = [(t * MS, t * MS // 2, t * MS // 10) for t in range(0, 101, 5)]
    assert sampler.shares(10 * MS, 60 * MS) == pytest.approx((0.5, 0.1))
    assert sampler.shares(200 * MS, 300 * MS) is None  # no samples there
