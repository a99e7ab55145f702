"""One ``/metrics`` across ``--workers N``: each worker publishes its samples, any worker merges.

Each worker process has its own registry (``server.metrics``), and a scrape reaches whichever
worker the kernel hands the connection to. With ``--workers N`` (N > 1), ``tabserve serve``
(the supervisor process) creates a directory named after its PID, :func:`share_dir`, that its
workers find from their parent's PID, and removes it when it exits. Every worker writes its
registry's samples there once per ``interval_s`` (``<pid>.json``, written to a temporary file and
renamed), and ``GET /metrics`` on any worker answers its own live samples merged with the files
of the others:

- counters and histograms (``_total``, ``_bucket``, ``_sum``, ``_count``) are **summed** over
  workers, including workers that have exited (so totals never go backwards when one is
  restarted); ``_created`` takes the earliest;
- gauges: ``tabserve_queue_rows`` is summed (rows waiting in all workers); the monitoring gauges
  (``tabserve_drift_*``, ``tabserve_positive_rate``, ``tabserve_predicted_class_share``,
  ``tabserve_live_*``) are the answering worker's own, computed at the scrape: its monitoring
  snapshots already describe every worker's drift window and labels
  (``server.monitoring.shared``), so workers do not publish them (:data:`PUBLISHING`); every
  other gauge takes the largest value (models loaded, breaker state). Gauges of a worker whose
  file has not been refreshed for ``5 * interval_s`` are dropped.

What another worker contributes is at most ``interval_s`` old (one second by default); the
answering worker's own samples are live. Publishing costs one exposition of the registry per
second per worker (a few hundred microseconds; the monitoring gauges, the costly part, are
left out), off the request path.

Monitoring shares the same directory (``server.monitoring.shared``, under ``monitoring/``) with
the helpers here: :func:`write_atomic` and :func:`peer_files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from server.core import Core
from server.extension import Extension

log = logging.getLogger("tabserve.workershare")

SUMMED_GAUGES = frozenset({"tabserve_queue_rows"})
OWN_GAUGE_PREFIXES = (
    "tabserve_drift_",
    "tabserve_positive_rate",
    "tabserve_predicted_class_share",
    "tabserve_live_",
)
"""Gauges taken from the answering worker (already a view of all workers)."""
PUBLISHING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tabserve_workershare_publishing", default=False
)
"""True while a worker collects its registry to publish it for the others: a collector whose
values the answering worker computes live for every worker (the monitoring gauges) yields
nothing then, instead of computing values no one reads."""
STALE_AFTER_INTERVALS = 5
"""A worker whose file is older than this many publish intervals is gone or stuck."""

Sample = tuple[str, dict[str, str], float]
Family = dict[str, Any]
"""``{"name", "type", "help", "samples": [[sample name, labels, value], ...]}`` as published."""


def families_of(registry: CollectorRegistry) -> list[Family]:
    """The registry's samples, in the published form."""
    return [
        {
            "name": metric.name,
            "type": metric.type,
            "help": metric.documentation,
            "samples": [[s.name, dict(s.labels), float(s.value)] for s in metric.samples],
        }
        for metric in registry.collect()
    ]


def _gauge_mode(name: str) -> str:
    if name in SUMMED_GAUGES:
        return "sum"
    if name.startswith(OWN_GAUGE_PREFIXES):
        return "first"
    return "max"


def merge(workers: Iterable[tuple[str, list[Family], bool]]) -> list[Family]:
    """Merge ``(worker id, families, fresh)`` of every worker into one list of families.

    The answering worker comes first (its value wins for the "own" gauges). ``fresh`` is False
    for a worker whose file is stale (gone or stuck): its counters and
    histograms still count, its gauges do not.
    """
    merged: dict[str, Family] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for _worker, families, fresh in workers:
        for family in families:
            name, kind = family["name"], family["type"]
            if kind in ("gauge", "unknown", "info", "stateset") and not fresh:
                continue
            merged.setdefault(name, {"name": name, "type": kind, "help": family["help"]})
            series = values.setdefault(name, {})
            mode = _gauge_mode(name) if kind == "gauge" else "sum"
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                if key not in series:
                    series[key] = value
                elif mode == "first":
                    continue
                elif sample_name.endswith("_created"):
                    series[key] = min(series[key], value)
                elif mode == "max":
                    series[key] = max(series[key], value)
                else:
                    series[key] += value
    return [
        {**family, "samples": [[n, dict(lbls), v] for (n, lbls), v in values[name].items()]}
        for name, family in merged.items()
    ]


class _Merged:
    """A collector yielding already-merged families (for ``generate_latest``)."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            metric = Metric(family["name"], family["help"], family["type"])
            for name, labels, value in family["samples"]:
                metric.add_sample(name, labels, value)
            yield metric


def exposition(families: list[Family]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families))
    return generate_latest(registry)


def share_dir(supervisor_pid: int) -> Path:
    """The directory the workers of the ``tabserve serve`` process ``supervisor_pid`` share."""
    return Path(tempfile.gettempdir()) / f"tabserve-{supervisor_pid}-workers"


def create_share_dir(supervisor_pid: int) -> Path:
    """Create :func:`share_dir` empty and readable by this user only (the supervisor does this
    before starting its workers, and removes it when it exits)."""
    path = share_dir(supervisor_pid)
    if path.is_symlink():
        path.unlink()
    elif path.exists():  # left by an earlier process that had our PID
        shutil.rmtree(path)
    path.mkdir(mode=0o700)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename: readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def peer_files(directory: Path, own: Path, pattern: str = "*.json") -> Iterator[tuple[Path, float]]:
    """The other workers' files in ``directory`` (not ``own``) and their age in seconds."""
    now = time.time()
    for path in directory.glob(pattern):
        if path == own:
            continue
        try:
            yield path, now - path.stat().st_mtime
        except OSError:
            continue  # removed meanwhile: that worker exited


class WorkerShare:
    """This worker's side of the shared directory: publish our samples, merge everyone's."""

    def __init__(self, directory: Path, interval_s: float = 1.0, pid: int | None = None) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self.worker = str(pid if pid is not None else os.getpid())
        self.path = directory / f"{self.worker}.json"

    def publish(self, registry: CollectorRegistry) -> None:
        """Write our samples (to a temporary file, then renamed: readers never see half)."""
        token = PUBLISHING.set(True)
        try:
            families = families_of(registry)
        finally:
            PUBLISHING.reset(token)
        write_atomic(self.path, json.dumps(families))

    def others(self) -> Iterator[tuple[str, list[Family], bool]]:
        """The other workers' published families, and whether each file is fresh."""
        for path, age_s in peer_files(self.directory, self.path):
            try:
                families = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # vanished or replaced while read: the next scrape has it
            yield path.stem, families, age_s <= STALE_AFTER_INTERVALS * self.interval_s

    def render(self, registry: CollectorRegistry) -> bytes:
        """The exposition of all workers: ours live, the others' as last published."""
        return exposition(merge([(self.worker, families_of(registry), True), *self.others()]))


class WorkerShareExtension(Extension):
    """Publishes this worker's metrics every ``interval_s`` and makes ``/metrics`` merge all."""

    def __init__(self, directory: Path, interval_s: float = 1.0) -> None:
        self.share = WorkerShare(directory, interval_s)
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def start(self, core: Core) -> None:
        registry = core.metrics.registry
        self.share.directory.mkdir(parents=True, exist_ok=True)
        self.share.publish(registry)
        core.metrics.exposition = self.share.render
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._publish_every_interval(registry), name="metrics-share"
        )

    async def _publish_every_interval(self, registry: CollectorRegistry) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.share.interval_s)
            try:
                self.share.publish(registry)
            except OSError as exc:
                log.warning("event=metrics_share_failed path=%s error=%s", self.share.path, exc)

    async def stop(self) -> None:
        """Publish one last time (our final counts stay in the others' totals) and stop."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
