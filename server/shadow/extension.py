"""Shadow scoring as an app extension: a candidate version scores a copy of the primary's
traffic, its live quality is tracked beside the primary's, and it can be promoted.

- ``observer_for(card)``: a tap on every model version's batcher. While the registry's snapshot
  names a shadow for the model (``models/<name>/routing.json``, see ``server.routing``) and this
  version is the primary, each answered batch is offered to the :class:`ShadowScorer` (after the
  answers are set; a deque append). The shadow's scores go to its own monitor, so its drift and
  live quality are those of the primary's traffic.
- ``labelled(...)``: the monitoring routes call it for every label the primary's row took; the
  label is given to the shadow's monitor too, and when both have the row it becomes a pair
  (:class:`~server.shadow.compare.Pairs`, per primary and shadow version).
- Automatic promotion (``TABSERVE_SHADOW_PROMOTE_AFTER_LABELS`` > 0): after each pair, the rule
  of :meth:`Pairs.decide`; when it holds, the routing is rewritten (``by: auto``, the reason
  naming both metrics) and the registry reloads: the next request is answered by the new
  primary, the ones in flight finish on the old one.
- ``GET /v1/models/{name}/shadow`` and the admin calls are in ``routes.py``.

With ``--workers N`` each worker keeps its own pairs (the labels it received or was forwarded);
the first worker whose pairs satisfy the rule promotes, the others follow at their next
repository scan.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from litestar.types import ControllerRouterHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.batcher import BatchObserver
from server.core import Core
from server.errors import TabserveError, UnknownFeedbackId
from server.extension import Extension
from server.ladder import CascadeRunner
from server.modelcard import ModelCard
from server.monitoring.extension import Labelled, MonitoringExtension
from server.monitoring.monitor import ModelMonitor
from server.registry import LoadedModel
from server.retrain_trigger import RetrainTrigger
from server.routing import update_routing
from server.runner import Runner
from server.settings import Settings
from server.shadow.compare import Pairs
from server.shadow.scorer import ShadowScorer

log = logging.getLogger("tabserve.shadow")


class ShadowTap:
    """The batch observer of one version: offers its batches to its model's shadow while it is
    the primary and a shadow is set."""

    def __init__(self, ext: ShadowExtension, card: ModelCard) -> None:
        self.ext = ext
        self.card = card

    def observe(
        self, rows: np.ndarray, scores: np.ndarray, requests: Sequence[tuple[str, int, int]]
    ) -> None:
        core = self.ext.core
        if core is None:
            return
        snapshot = core.registry.snapshot
        shadow = snapshot.shadows.get(self.card.name)
        if shadow is None:
            return
        primary = snapshot.latest.get(self.card.name)
        if primary is None or primary.card is not self.card:
            return
        sink = self.ext.sink(shadow, self.card)
        if sink is not None:
            self.ext.scorer.offer(full_runner(shadow).run, sink.observe_shadow, rows, requests)


class ShadowExtension(Extension):
    """Shadow scoring, paired live quality and (optionally) automatic promotion."""

    def __init__(
        self,
        settings: Settings,
        monitoring: MonitoringExtension,
        retrain: RetrainTrigger | None = None,
    ) -> None:
        self.settings = settings
        self.monitoring = monitoring
        self.retrain = retrain
        self.scorer = ShadowScorer(settings.shadow_queue_rows, settings.shadow_cpu_share)
        self.core: Core | None = None
        self._pairs: dict[tuple[str, int, int], Pairs] = {}
        self._promoting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: Collector | None = None
        # shadow LoadedModel -> (the primary's card it was checked against, its monitor when it
        # can take that primary's rows, else None)
        self._sinks: weakref.WeakKeyDictionary[
            LoadedModel, tuple[ModelCard, ModelMonitor | None]
        ] = weakref.WeakKeyDictionary()
        monitoring.label_listeners.append(self.labelled)

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        from server.shadow.routes import handlers

        return handlers(self)

    async def start(self, core: Core) -> None:
        self.core = core
        self.scorer.start()
        self._collector = _ShadowCollector(self)
        core.metrics.registry.register(self._collector)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.scorer.close)
        if self.core is not None and self._collector is not None:
            self.core.metrics.registry.unregister(self._collector)
        self._collector = None
        self.core = None

    def observer_for(self, card: ModelCard, *, variant: str | None = None) -> BatchObserver | None:
        return ShadowTap(self, card) if variant is None else None

    # --- scoring ---------------------------------------------------------------------------

    def sink(self, shadow: LoadedModel, primary: ModelCard) -> ModelMonitor | None:
        """Where the shadow's scores go: its monitor, when it takes the primary's rows as they
        are (the same input columns); None otherwise (logged once)."""
        known = self._sinks.get(shadow)
        if known is not None and known[0] is primary:
            return known[1]
        found: ModelMonitor | None = None
        problem = compatibility(primary, shadow.card)
        if problem is None:
            try:
                found = self.monitoring.monitor(shadow.name, shadow.version)
            except TabserveError as exc:
                problem = str(exc)
        if problem is not None:
            log.error(
                "event=shadow_refused model=%s shadow=%d reason=%r",
                shadow.name,
                shadow.version,
                problem,
            )
        self._sinks[shadow] = (primary, found)
        return found

    # --- labels and pairs ------------------------------------------------------------------

    def pairs(self, name: str, primary: int, shadow: int, task: Any) -> Pairs:
        key = (name, primary, shadow)
        found = self._pairs.get(key)
        if found is None:
            for old in [k for k in self._pairs if k[0] == name]:
                del self._pairs[old]  # another primary or shadow now: start over
            s = self.settings
            capacity = max(s.quality_window_labels, s.shadow_promote_after_labels)
            found = self._pairs[key] = Pairs(task, capacity)
        return found

    def labelled(self, event: Labelled) -> None:
        """A label the primary's row took: give it to the shadow's monitor, pair the answers."""
        monitor = event.monitor
        core = self.core
        if core is None:
            return
        name = monitor.card.name
        snapshot = core.registry.snapshot
        primary = snapshot.latest.get(name)
        shadow = snapshot.shadows.get(name)
        if shadow is None or primary is None or primary.card is not monitor.card:
            return
        sink = self.sink(shadow, primary.card)
        if sink is None:
            return
        try:
            theirs = sink.feedback(
                label=event.label,
                request_id=event.request_id,
                row=event.row,
                row_hash=event.row_hash,
            )
        except (UnknownFeedbackId, TabserveError):
            return  # the shadow skipped that row (it was behind) or has not scored it yet
        card = monitor.card
        pairs = self.pairs(name, card.version, shadow.version, card.task)
        pairs.add(event.result.answer, theirs.answer, event.result.truth)
        self._maybe_promote(name, card.version, shadow.version, pairs)

    def _maybe_promote(self, name: str, primary: int, shadow: int, pairs: Pairs) -> None:
        s = self.settings
        if s.shadow_promote_after_labels <= 0 or name in self._promoting:
            return
        if pairs.total % 25 and pairs.size != s.shadow_promote_after_labels:
            return  # the rule is checked every 25 pairs (and when the count is first reached)
        decision = pairs.decide(s.shadow_promote_after_labels, s.shadow_promote_margin)
        if not decision.promote:
            return
        self._promoting.add(name)
        task = asyncio.get_running_loop().create_task(
            self.promote(
                name, shadow, serving=primary, by="auto", reason=decision.reason, from_shadow=True
            ),
            name=f"shadow-promote-{name}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def promote(
        self,
        name: str,
        version: int,
        *,
        serving: int,
        by: Any,
        reason: str,
        from_shadow: bool = False,
    ) -> None:
        """Make ``version`` the primary of ``name`` and reload (``serving``: the primary now)."""
        assert self.core is not None
        core = self.core
        try:
            await asyncio.to_thread(
                update_routing,
                core.settings.models_dir,
                name,
                lambda r: r.promoted(version, serving, from_shadow=from_shadow),
                action="promote",
                by=by,
                reason=reason,
            )
            await core.registry.reload()
            log.warning(
                "event=model_promoted model=%s version=%d from=%d by=%s reason=%r",
                name,
                version,
                serving,
                by,
                reason,
            )
        except Exception as exc:
            log.error("event=promotion_failed model=%s version=%d error=%r", name, version, exc)
        finally:
            self._promoting.discard(name)

    def describe(self, name: str) -> dict[str, Any]:
        """The shadow view of ``name``: versions, the scorer's counters, both live qualities and
        the paired comparison (with the automatic rule's verdict)."""
        assert self.core is not None
        snapshot = self.core.registry.snapshot
        primary = self.core.registry.get(name)
        shadow = snapshot.shadows.get(name)
        s = self.settings
        view: dict[str, Any] = {
            "model": name,
            "primary": primary.version,
            "shadow": shadow.version if shadow is not None else None,
            "auto_promote": {
                "after_labels": s.shadow_promote_after_labels,
                "margin": s.shadow_promote_margin,
            },
            "scorer": {
                **vars(self.scorer.stats),
                "rows_skipped": self.scorer.stats.rows_skipped,
                "queued_rows": self.scorer.queued_rows,
            },
            "last_retrain_trigger": self.retrain.describe(name) if self.retrain else None,
        }
        if shadow is None:
            return view
        sink = self.sink(shadow, primary.card)
        view["refused"] = sink is None
        for role, model in (("primary_quality", primary), ("shadow_quality", shadow)):
            try:
                view[role] = self.monitoring.snapshot(self.monitoring.monitor(name, model.version))[
                    "quality"
                ]
            except TabserveError:
                view[role] = None
        pairs = self.pairs(name, primary.version, shadow.version, primary.card.task)
        decision = pairs.decide(s.shadow_promote_after_labels, s.shadow_promote_margin)
        view["paired"] = {**pairs.describe(), "promote": decision.promote, "why": decision.reason}
        return view


def full_runner(model: LoadedModel) -> Runner:
    """The session of the version's full model (a cascading version's, not its cascade)."""
    runner = model.runner
    return runner.full if isinstance(runner, CascadeRunner) else runner  # type: ignore[return-value]


def compatibility(primary: ModelCard, shadow: ModelCard) -> str | None:
    """Why ``shadow`` cannot score ``primary``'s rows as they are, or None when it can."""
    if shadow.task != primary.task:
        return f"the shadow is a {shadow.task} model, the primary {primary.task}"

    def meaning(card: ModelCard) -> list[tuple[str, str, list[Any]]]:
        # what a row matrix's column means; missing and unknown values are each model's own
        # business (its monitor counts them; an error scoring a batch is counted)
        return [(c.name, c.kind, c.categories) for c in card.input.columns]

    if meaning(shadow) != meaning(primary):
        return "the shadow's input columns differ from the primary's"
    if shadow.classes != primary.classes:
        return "the shadow's classes differ from the primary's"
    return None


class _ShadowCollector(Collector):
    def __init__(self, ext: ShadowExtension) -> None:
        self.ext = ext

    def collect(self) -> Any:
        stats = self.ext.scorer.stats
        for field, help_text in (
            ("rows_scored", "Rows the shadow models scored"),
            ("rows_skipped", "Rows a shadow skipped: it was behind, or over its CPU share"),
            ("errors", "Shadow runs that failed"),
        ):
            family = CounterMetricFamily(f"tabserve_shadow_{field}", help_text)
            family.add_metric([], float(getattr(stats, field)))
            yield family
        queued = GaugeMetricFamily("tabserve_shadow_queued_rows", "Rows waiting for a shadow")
        queued.add_metric([], float(self.ext.scorer.queued_rows))
        yield queued
