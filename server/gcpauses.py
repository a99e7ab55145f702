"""The garbage collector's pauses as a metric: ``tabserve_gc_pause_seconds{generation}``.

A collection stops the event loop: every request waiting on it waits as long, so a 50 ms young
collection is a 50 ms tail for a whole burst of answers. ``prometheus_client``'s own GC collector
counts collections and collected objects but not how long they took; this module times each one
with a ``gc.callbacks`` hook and exposes the durations as a histogram by generation (0 young,
2 full), on every app's registry (``server.app.create_app`` adds it). With ``--workers N`` the
histograms are summed over workers, as the other histograms are (``server.workershare``).

The collector belongs to the process, not to an app: one hook is installed per process
(:func:`install`, idempotent, called when an app is created) and every registry reads the same
counts. The hook runs in whichever thread made the collection, while no other collection can
start, so it takes no lock (a lock held by the code the collection interrupted would deadlock
it) and allocates no tracked object: two clock reads and one histogram observation
(``server.metrics.HistogramChild``), against 1.6 collections per 1,000 requests under load at
most (``docs/benchmarks.md``).
"""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry

from server.metrics import Histogram, HistogramChild

PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
"""Upper bounds in seconds: a young collection of a quiet heap takes tens of microseconds, one
that walks a few hundred thousand objects tens of milliseconds."""

GENERATIONS = 3
NAME = "tabserve_gc_pause_seconds"


class GcPauses:
    """Collection durations by generation (the process's one instance is :data:`PAUSES`)."""

    __slots__ = ("_started", "children")

    def __init__(self, bounds: tuple[float, ...] = PAUSE_BUCKETS) -> None:
        self.children = [HistogramChild([float(b) for b in bounds]) for _ in range(GENERATIONS)]
        self._started = 0.0

    def hook(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` entry: ``start`` and ``stop`` of every collection (a ``stop``
        with no ``start`` seen, when the hook was installed mid-collection, is skipped)."""
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started:
            self.children[info["generation"]].observe(time.perf_counter() - self._started)
            self._started = 0.0


PAUSES = GcPauses()


def install(pauses: GcPauses = PAUSES) -> None:
    """Time every collection from now on (once per process, however often it is called)."""
    if pauses.hook not in gc.callbacks:
        gc.callbacks.append(pauses.hook)


def uninstall(pauses: GcPauses = PAUSES) -> None:
    while pauses.hook in gc.callbacks:
        gc.callbacks.remove(pauses.hook)


class GcPauseHistogram(Histogram):
    """``tabserve_gc_pause_seconds`` on ``registry``, reading :data:`PAUSES` (or ``pauses``)."""

    def __init__(self, registry: CollectorRegistry, pauses: GcPauses = PAUSES) -> None:
        super().__init__(
            NAME,
            "Garbage collections by generation (0: young, 2: full) and how long each stopped "
            "the process, in seconds.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        for generation, child in enumerate(pauses.children):
            self._children[(str(generation),)] = child
