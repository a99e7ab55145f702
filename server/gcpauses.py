"""The garbage collector's pauses as a metric: ``tabserve_gc_pause_seconds{generation}``.

A collection stops the event loop: every request waiting on it waits as long, so a 50 ms young
collection is a 50 ms tail for a whole burst of answers. ``prometheus_client``'s own GC collector
counts collections and collected objects but not how long they took; this module times each one
with a ``gc.callbacks`` hook and exposes the durations as a histogram by generation (0 young,
2 full), on every app's registry (``server.metrics.ServerMetrics``). With ``--workers N`` the
histograms are summed over workers, as the other histograms are (``server.workershare``).

The collector belongs to the process, not to an app: one hook is installed per process
(:func:`install`, idempotent, called when an app starts) and every registry reads the same
counts. The hook runs in whichever thread made the collection, while no other collection can
start, so it takes no lock (a lock held by the code the collection interrupted would deadlock
it) and allocates no tracked object: two clock reads, a bisect and two additions, about a
microsecond, against 1.6 collections per 1,000 requests under load (``docs/benchmarks.md``).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
"""Upper bounds in seconds: a young collection of a quiet heap takes tens of microseconds, one
that walks a few hundred thousand objects tens of milliseconds."""

GENERATIONS = 3
NAME = "tabserve_gc_pause_seconds"


class GcPauses:
    """Collection durations by generation, as histogram counts (the process's one instance is
    :data:`PAUSES`)."""

    __slots__ = ("_started", "bounds", "counts", "sums")

    def __init__(self, bounds: tuple[float, ...] = PAUSE_BUCKETS) -> None:
        self.bounds = list(bounds)
        self.counts = [[0] * (len(bounds) + 1) for _ in range(GENERATIONS)]  # the last is +Inf
        self.sums = [0.0] * GENERATIONS
        self._started = 0.0

    def hook(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` entry: ``start`` and ``stop`` of every collection."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = info["generation"]
        self.counts[generation][bisect.bisect_left(self.bounds, seconds)] += 1
        self.sums[generation] += seconds


PAUSES = GcPauses()


def install(pauses: GcPauses = PAUSES) -> None:
    """Time every collection from now on (once per process, however often it is called)."""
    if pauses.hook not in gc.callbacks:
        gc.callbacks.append(pauses.hook)


def uninstall(pauses: GcPauses = PAUSES) -> None:
    while pauses.hook in gc.callbacks:
        gc.callbacks.remove(pauses.hook)


class GcPauseCollector(Collector):
    """Exposes :data:`PAUSES` (or ``pauses``) on a registry as ``tabserve_gc_pause_seconds``."""

    def __init__(self, pauses: GcPauses = PAUSES) -> None:
        self.pauses = pauses

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = self._family()
        bounds = [*(repr(b) for b in self.pauses.bounds), "+Inf"]
        for generation in range(GENERATIONS):
            counts = list(self.pauses.counts[generation])  # a copy: a collection may add to it
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([str(generation)], buckets, self.pauses.sums[generation])
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(
            NAME,
            "Garbage collections by generation (0: young, 2: full) and how long each stopped "
            "the process, in seconds.",
            labels=["generation"],
        )
