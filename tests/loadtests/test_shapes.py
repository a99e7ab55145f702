"""The ramp/spike shape's schedule."""

from __future__ import annotations

from loadtests.traffic import users_at


def test_ramp_spike_schedule() -> None:
    duration, peak = 100.0, 40
    assert users_at(0, duration, peak) == 5  # warm: peak / 8
    assert users_at(14, duration, peak) == 5
    assert users_at(32.5, duration, peak) == round((0.125 + 0.875 / 2) * peak)  # half-way up
    assert users_at(49.9, duration, peak) == 40
    assert users_at(60, duration, peak) == 120  # spike: 3x peak
    assert users_at(90, duration, peak) == 10  # recover
    assert users_at(100, duration, peak) is None
