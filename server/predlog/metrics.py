"""The prediction log's counters, and the Prometheus collector that reads them at scrape time.

===========================================  ============  =======================================
name                                         labels        meaning
===========================================  ============  =======================================
tabserve_prediction_log_rows_total           model         served rows written (finished files)
tabserve_prediction_log_labels_total         model         labels written
tabserve_prediction_log_dropped_rows_total   model,reason  rows and labels not written:
                                                           ``queue_full`` (the writer is behind),
                                                           ``write_error`` (their file failed),
                                                           ``stopped`` (after stop)
tabserve_prediction_log_errors_total         op            failures: ``write`` (make, write, close
                                                           or rename a file), ``delete`` (the
                                                           disk bound), ``observe`` / ``label``
                                                           (taking rows or a label on the loop)
tabserve_prediction_log_deleted_files_total                files the disk bound deleted
tabserve_prediction_log_bytes                              bytes of the directory's finished files
                                                           (all workers'), as last measured
===========================================  ============  =======================================

Each counter has one writing thread: :class:`LoopCounts` the event loop, :class:`WriterCounts`
the writer thread; the collector only reads them (no locks on either path).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

QUEUE_FULL = "queue_full"
WRITE_ERROR = "write_error"
STOPPED = "stopped"

_K = TypeVar("_K")


@dataclass
class LoopCounts:
    """Counted on the event loop."""

    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(model, reason) -> rows and labels not taken."""
    errors: Counter[str] = field(default_factory=lambda: Counter(observe=0, label=0))
    """op -> failures."""


@dataclass
class WriterCounts:
    """Counted by the writer thread."""

    rows: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=lambda: Counter(write=0, delete=0))
    deleted_files: int = 0
    bytes_on_disk: int = 0


@dataclass
class LogCounts:
    loop: LoopCounts = field(default_factory=LoopCounts)
    writer: WriterCounts = field(default_factory=WriterCounts)

    def errors(self) -> Counter[str]:
        return _sum(self.loop.errors, self.writer.errors)

    def dropped(self) -> Counter[tuple[str, str]]:
        return _sum(self.loop.dropped, self.writer.dropped)


def _sum(*counters: Counter[_K]) -> Counter[_K]:
    """The sum of counters another thread may be adding keys to (``list(items())`` is one step
    under the GIL; iterating them in Python is not); keeps zero counts."""
    out: Counter[_K] = Counter()
    for counter in counters:
        for key, n in list(counter.items()):
            out[key] += n
    return out


class PredictionLogCollector(Collector):
    """Exposes a :class:`LogCounts` (register on the app's registry, unregister at stop)."""

    def __init__(self, counts: LogCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        w = c.writer
        rows = CounterMetricFamily(
            "tabserve_prediction_log_rows",
            "Served rows written to the prediction log.",
            labels=["model"],
        )
        for model, n in list(w.rows.items()):
            rows.add_metric([model], n)
        labels = CounterMetricFamily(
            "tabserve_prediction_log_labels",
            "Labels (feedback) written to the prediction log.",
            labels=["model"],
        )
        for model, n in list(w.labels.items()):
            labels.add_metric([model], n)
        dropped = CounterMetricFamily(
            "tabserve_prediction_log_dropped_rows",
            "Rows and labels the prediction log did not write (queue_full, write_error, stopped).",
            labels=["model", "reason"],
        )
        for (model, reason), n in sorted(c.dropped().items()):
            dropped.add_metric([model, reason], n)
        errors = CounterMetricFamily(
            "tabserve_prediction_log_errors",
            "Prediction log failures (write, delete, observe, label); predictions never fail.",
            labels=["op"],
        )
        for op, n in sorted(c.errors().items()):
            errors.add_metric([op], n)
        yield rows
        yield labels
        yield dropped
        yield errors
        yield CounterMetricFamily(
            "tabserve_prediction_log_deleted_files",
            "Prediction log files deleted to keep the log under its disk bound.",
            value=w.deleted_files,
        )
        yield GaugeMetricFamily(
            "tabserve_prediction_log_bytes",
            "Bytes of the prediction log's finished files, as last measured.",
            value=w.bytes_on_disk,
        )
