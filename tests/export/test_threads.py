"""Training threads: the usable cores minus the busy ones, never fewer than one."""

from __future__ import annotations

import pytest

from export.threads import training_threads, usable_cores


@pytest.mark.parametrize(
    ("cores", "load", "threads"),
    [
        (2, 0.0, 2),
        (2, 0.7, 2),  # a little background work: still every core
        (2, 1.0, 1),
        (2, 4.0, 1),  # a busy machine: one thread, not one per core fighting for them
        (8, 3.0, 5),
        (1, 0.0, 1),
    ],
)
def test_threads_leave_the_busy_cores(cores: int, load: float, threads: int) -> None:
    assert training_threads(cores, load) == threads


def test_defaults_read_this_machine() -> None:
    assert 1 <= training_threads() <= usable_cores()
