"""How many threads a build may train with: the cores this process may use, minus the busy ones.

Training with a thread per core while other work runs makes every thread wait for a core (on this
2-core machine, ``xgb_large``'s cross-validation went from 6 s to 65 s at load average 2-4), so
the default leaves the cores the load average says are taken.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def training_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads for training: ``cores`` minus the one-minute load average, at least 1.

    A core counts as taken once the load average says it is more than three quarters busy, so
    a machine with a little background work still trains on every core.
    """
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return max(1, min(cores, int(cores - load + 0.75)))
