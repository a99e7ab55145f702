"""Monitoring as an app extension: one ModelMonitor per served version, its routes, its metrics.

``MonitoringExtension(settings)`` plugs into ``server.app.create_app(..., extensions=[...])``:

- ``observer_for(card)``: a new :class:`ModelMonitor` for each model version the registry loads
  (the batcher holds it and calls ``observe`` per batch);
- ``start(core)``: registers the Prometheus collector on the app's registry
  (``core.metrics.registry``); ``stop()`` unregisters it;
- ``route_handlers()``: ``GET /v1/models/{name}/monitoring`` and ``POST .../feedback`` (see
  :mod:`server.monitoring.routes`).

With ``--workers N`` (``settings.workers > 1``) it also runs this worker's side of
:class:`~server.monitoring.shared.MonitorShare` in the directory the workers share for
``/metrics``: it publishes its monitors' states every second, answers the other workers'
feedback on its socket, and its snapshots (routes and gauges) describe every worker.

A monitor that cannot be built (a bad setting) is logged and left out: the version serves
without one. Monitors are held by weak reference: the batcher of a version owns its monitor, so
when a version is unloaded (and its batcher dropped) the monitor and its feedback memory go with
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar.types import ControllerRouterHandler

from server.batcher import BatchObserver
from server.core import Core
from server.errors import ModelNotReady
from server.extension import Extension
from server.modelcard import ModelCard
from server.monitoring.monitor import FeedbackResult, ModelMonitor, MonitorParams
from server.monitoring.prometheus import MonitoringCollector, register_monitoring_metrics
from server.monitoring.shared import MonitorShare
from server.registry import LoadedModel
from server.settings import Settings
from server.workershare import share_dir as workers_share_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Labelled:
    """A label a served row took in this worker, as the label listeners get it."""

    monitor: ModelMonitor
    request_id: str | None
    """With ``row``, how the feedback named the row; else by ``row_hash``."""
    row: int
    row_hash: str | None
    label: Any
    """The label as given."""
    result: FeedbackResult
    """What it matched (``answer`` and ``truth`` as the monitor keeps them)."""


LabelListener = Callable[[Labelled], None]


class MonitoringExtension(Extension):
    """Drift and live-quality monitoring for every served model version."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        share_dir: Path | None = None,
        publish_interval_s: float = 1.0,
    ) -> None:
        """``share_dir``: the directory shared with the other workers; by default, with
        ``settings.workers > 1``, the one their supervisor (our parent process) made."""
        self.params = MonitorParams.from_settings(settings)
        self._clock = clock
        if share_dir is None and settings.workers > 1:
            share_dir = workers_share_dir(os.getppid())
        self.share = (
            MonitorShare(share_dir, interval_s=publish_interval_s)
            if share_dir is not None
            else None
        )
        self._publisher: asyncio.Task[None] | None = None
        self._stop_publishing: asyncio.Event | None = None
        self._monitors: weakref.WeakValueDictionary[tuple[str, int], ModelMonitor] = (
            weakref.WeakValueDictionary()
        )
        self._variant_monitors: weakref.WeakValueDictionary[tuple[str, int, str], ModelMonitor] = (
            weakref.WeakValueDictionary()
        )
        self._core: Core | None = None
        self._collector: MonitoringCollector | None = None
        self.label_listeners: list[LabelListener] = []
        """Called with every label a row took in this worker (the shadow pairs it, the
        prediction log writes it). A listener's failure is logged, never the caller's."""

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        from server.monitoring.routes import handlers

        return handlers(self)

    async def start(self, core: Core) -> None:
        self._core = core
        self._collector = register_monitoring_metrics(
            core.metrics.registry, self.serving, self.snapshot
        )
        if self.share is not None:
            from server.monitoring.routes import peer_answerer

            try:
                await self.share.serve(peer_answerer(self))
                self.share.publish([])
            except OSError as exc:  # e.g. no room in /tmp: monitor this worker alone
                log.error(
                    "event=monitoring_share_unavailable directory=%s error=%r (each worker "
                    "monitors its own traffic)",
                    self.share.directory,
                    exc,
                )
                await self.share.close()
                self.share = None
                return
            self._stop_publishing = asyncio.Event()
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish_every_interval(self.share), name="monitoring-share"
            )

    async def _publish_every_interval(self, share: MonitorShare) -> None:
        stop = self._stop_publishing
        assert stop is not None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=share.interval_s)
            try:
                share.refresh(self.serving())
            except Exception as exc:  # never stop publishing over one bad round
                log.warning("event=monitoring_share_failed error=%r", exc)

    async def stop(self) -> None:
        if self._publisher is not None and self._stop_publishing is not None:
            self._stop_publishing.set()
            await self._publisher
            self._publisher = None
        if self.share is not None:
            await self.share.close()
        if self._core is not None and self._collector is not None:
            self._core.metrics.registry.unregister(self._collector)
        self._collector = None
        self._core = None

    def observer_for(self, card: ModelCard, *, variant: str | None = None) -> BatchObserver | None:
        """A new monitor for ``card``; None (and an error log) when one cannot be built, so that
        a monitoring problem (e.g. ``TABSERVE_DRIFT_WINDOW_ROWS=0``) never keeps a model from
        serving: the version serves unmonitored, and its monitoring route answers 503."""
        try:
            # A variant's monitor stays in its worker: its feedback is found by asking every
            # worker, its live quality is this worker's rows.
            shared = self.share is not None and variant is None
            monitor = ModelMonitor(card, self.params, clock=self._clock, shared=shared)
        except Exception as exc:
            log.error(
                "event=monitor_unavailable model=%s/%d reason=%r (serving without monitoring)",
                card.name,
                card.version,
                exc,
            )
            return None
        if variant is None:
            self._monitors[(card.name, card.version)] = monitor
        else:
            self._variant_monitors[(card.name, card.version, variant)] = monitor
        return monitor

    def variant_monitors(self, name: str, version: int) -> dict[str, ModelMonitor]:
        """The monitors of a served version's ladder variants (degrade on), by variant."""
        model = self._registry_get(name, version)
        if model.ladder is None:
            return {}
        found = (
            (r.name, self._variant_monitors.get((name, version, r.name)))
            for r in model.ladder.variants
        )
        return {variant: m for variant, m in found if m is not None}

    # --- lookups for routes and metrics ------------------------------------------------------

    def serving(self) -> list[ModelMonitor]:
        """Monitors of the versions the registry serves now, by name then version."""
        if self._core is None:
            return []
        found = (
            self._monitors.get((m.name, m.version)) for m in self._core.registry.snapshot.all()
        )
        return [m for m in found if m is not None]

    def snapshot(self, monitor: ModelMonitor) -> dict[str, Any]:
        """``monitor``'s snapshot: over every worker's traffic when there are several."""
        snap = monitor.snapshot() if self.share is None else self.share.snapshot(monitor)
        variants = self.variant_monitors(monitor.card.name, monitor.card.version)
        if variants:
            # Degrade on: what each variant answered (this worker's rows), its own threshold.
            snap["variants"] = {
                name: {
                    key: part[key]
                    for key in ("status", "window", "thresholds", "top_drifting", "quality")
                }
                for name, part in ((n, m.snapshot()) for n, m in variants.items())
            }
        return snap

    def monitor(self, name: str, version: int | None = None) -> ModelMonitor:
        """The monitor of a served version (the latest when ``version`` is None).

        Raises ModelNotFound / VersionNotFound like the predict routes, and ModelNotReady when
        the version serves without a monitor (it was loaded before monitoring started).
        """
        model = self._registry_get(name, version)
        monitor = self._monitors.get((model.name, model.version))
        if monitor is None or monitor.card is not model.card:
            raise ModelNotReady(f"model {model.name}/{model.version} has no monitor")
        return monitor

    def labelled(self, event: Labelled) -> None:
        """Tell the label listeners that a row took a label."""
        for listener in self.label_listeners:
            try:
                listener(event)
            except Exception as exc:
                name = event.monitor.card.name
                log.error("event=label_listener_failed model=%s error=%r", name, exc)

    def monitors_newest_first(self, name: str) -> list[ModelMonitor]:
        """Monitors of the served versions of ``name`` for feedback lookups: the primary's
        first, then the others newest first; a shadow's is left out (a label reaches it through
        its primary, see ``server.shadow``)."""
        primary = self._registry_get(name, None)  # ModelNotFound for an unknown name
        assert self._core is not None
        snapshot = self._core.registry.snapshot
        versions = snapshot.versions.get(name, {})
        shadow = snapshot.shadows.get(name)
        skip = {shadow.version} if shadow is not None else set()
        others = [v for v in sorted(versions, reverse=True) if v != primary.version]
        order = [primary.version, *others]
        found: list[ModelMonitor] = []
        for v in order:
            if v in skip:
                continue
            monitor = self._monitors.get((name, v))
            if monitor is not None:
                found.append(monitor)
            found.extend(self.variant_monitors(name, v).values())
        return found

    def _registry_get(self, name: str, version: int | None) -> LoadedModel:
        if self._core is None:
            raise ModelNotReady("monitoring has not started")
        return self._core.registry.get(name, version)
