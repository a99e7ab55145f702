"""The model registry: every version under ``models_dir``, loaded, warmed up and batching.

A version is served only after its model.json validated, its ONNX file matched the card's
sha256, ONNX Runtime loaded it and warm-up measured its cost. A version that fails any step is
refused with one log line (``event=model_refused``) while the others serve.

The served set is an immutable :class:`Snapshot`. :meth:`Registry.reload` builds a new one
(reusing unchanged versions with their batchers), swaps it in one assignment, then drains and
stops the batchers of versions that left. A request resolves its version and enqueues its rows
without awaiting in between, so it always finishes on the version it was routed to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from server.batcher import MAX_SLICE_S, Batcher, BatchObserver, ModelRunner, ScoreCache
from server.errors import InvalidModelCard, ModelNotFound, ShuttingDown, VersionNotFound
from server.ladder import CASCADE, FULL, CascadeRunner, Ladder, Rung, order, variant_card
from server.metrics import ServerMetrics
from server.modelcard import CARD_FILE, ONNX_FILE, ModelCard, load_card, version_dirs
from server.routing import Routing, RoutingError, read_routing
from server.runner import Runner
from server.settings import Settings

log = logging.getLogger("tabserve.registry")

SLICES_PER_BUDGET = 5.0
"""A degrading model's batchers (its own and its variants') hold the event loop for at most a
fifth of its latency objective at a time: a request on a variant's queue does not wait out
a long slice of the model's batches."""

CacheFactory = Callable[[ModelCard], ScoreCache | None]


class ObserverFactory(Protocol):
    def __call__(self, card: ModelCard, *, variant: str | None = None) -> BatchObserver | None: ...


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One served model version."""

    card: ModelCard
    runner: ModelRunner
    batcher: Batcher
    ladder: Ladder | None = None
    """Degrade on (``TABSERVE_DEGRADE_OBJECTIVE_MS``): the model and its variants' batchers."""
    variant_header: bytes | None = None
    """``X-Model-Variant`` of the model's own answers when it degrades or cascades."""

    def batchers(self) -> list[Batcher]:
        """The model's batcher, then its variants'."""
        if self.ladder is None:
            return [self.batcher]
        return [rung.batcher for rung in self.ladder.rungs]

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version


@dataclass(frozen=True)
class Snapshot:
    """The served set; never mutated, replaced whole on reload."""

    versions: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    latest: dict[str, LoadedModel] = field(default_factory=dict)
    """The version that answers a request naming no version: the routing's primary when it is
    served, else the newest."""
    shadows: dict[str, LoadedModel] = field(default_factory=dict)
    """The version that scores a copy of the primary's traffic, by model (see server.shadow)."""
    routing: dict[str, Routing] = field(default_factory=dict)

    @classmethod
    def of(
        cls, models: Iterable[LoadedModel], routing: Mapping[str, Routing] | None = None
    ) -> Snapshot:
        versions: dict[str, dict[int, LoadedModel]] = {}
        for m in sorted(models, key=lambda m: (m.name, m.version)):
            versions.setdefault(m.name, {})[m.version] = m
        routes = {name: r for name, r in (routing or {}).items() if name in versions}
        latest: dict[str, LoadedModel] = {}
        shadows: dict[str, LoadedModel] = {}
        for name, by_version in versions.items():
            route = routes.get(name, Routing())
            primary = by_version.get(route.primary) if route.primary is not None else None
            # No primary served: the newest answers, unless that is the shadow, which is kept
            # from answering until it is promoted.
            others = [v for v in by_version if v != route.shadow] or list(by_version)
            latest[name] = primary or by_version[max(others)]
            shadow = by_version.get(route.shadow) if route.shadow is not None else None
            if shadow is not None and shadow is not latest[name]:
                shadows[name] = shadow
        return cls(versions, latest, shadows, routes)

    def all(self) -> list[LoadedModel]:
        return [m for by_version in self.versions.values() for m in by_version.values()]


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    serving: list[str] = field(default_factory=list)


class Registry:
    """Loads, serves and reloads model versions; owns their runners and batchers."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServerMetrics,
        *,
        cache_for: CacheFactory | None = None,
        observer_for: ObserverFactory | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache_for = cache_for
        self.observer_for = observer_for
        self.snapshot = Snapshot()
        self.closing = False
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()  # stops of versions a reload dropped
        # version dir -> (card mtime, onnx mtime) of a refused version, so a scan logs it once
        self._refused: dict[Path, tuple[float, float]] = {}
        self._bad_routing: dict[str, str] = {}  # model -> the routing file error last logged
        self._missing_primary: dict[str, int] = {}  # model -> the unserved primary last logged

    # --- lookups (hot path: no awaits, no allocation) ------------------------------------------

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        snapshot = self.snapshot
        if version is None:
            found = snapshot.latest.get(name)
            if found is None:
                raise self._not_found(name)
            return found
        by_version = snapshot.versions.get(name)
        if by_version is None:
            raise self._not_found(name)
        found = by_version.get(version)
        if found is None:
            raise VersionNotFound(
                f"model {name!r} has no version {version} (versions: {sorted(by_version)})"
            )
        return found

    def _not_found(self, name: str) -> ModelNotFound | ShuttingDown:
        # After close() the snapshot is empty: a request still arriving gets 503, not 404.
        if self.closing:
            return ShuttingDown("the server is shutting down")
        return ModelNotFound(f"no model named {name!r}")

    @property
    def ready(self) -> bool:
        """Loaded (and warmed up) at least one model, and not shutting down."""
        return not self.closing and bool(self.snapshot.latest)

    # --- load / reload -------------------------------------------------------------------------

    async def reload(self, *, in_thread: bool = True) -> ReloadReport:
        """Scan ``models_dir``; load new or changed versions, drop vanished ones; swap atomically.

        ``in_thread``: load and warm up sessions in a worker thread so a running server keeps
        answering (at startup, before serving, loading inline is simpler and as fast).
        """
        async with self._lock:
            report = ReloadReport()
            if self.closing:
                return report
            old = self.snapshot
            keep: list[LoadedModel] = []
            fresh: list[LoadedModel] = []
            try:
                for vdir in version_dirs(self.settings.models_dir):
                    label = f"{vdir.parent.name}/{vdir.name}"
                    current = old.versions.get(vdir.parent.name, {}).get(int(vdir.name))
                    if current is not None and self._unchanged(current, vdir):
                        keep.append(current)
                        continue
                    stamp = _stamp(vdir)
                    if self._refused.get(vdir) == stamp:
                        report.refused[label] = "unchanged since it was refused"
                        if current is not None:
                            keep.append(current)
                        continue
                    try:
                        if in_thread:
                            model = await asyncio.to_thread(self._load, vdir)
                        else:
                            model = self._load(vdir)
                    except InvalidModelCard as exc:
                        self._refused[vdir] = stamp
                        self.metrics.model_load_failures.inc()
                        report.refused[label] = exc.detail
                        log.error("event=model_refused model=%s reason=%r", label, exc.detail)
                        if current is not None:
                            keep.append(current)  # a broken update does not take down a working one
                        continue
                    self._refused.pop(vdir, None)
                    fresh.append(model)
                    report.loaded.append(label)
                    log.info(
                        "event=model_loaded model=%s cost_us=%.1f mode=%s",
                        label,
                        model.runner.cost_us,
                        "inline" if model.runner.inline else "thread",
                    )
                new = Snapshot.of(keep + fresh, self._routing(keep + fresh, old))
            except BaseException:  # e.g. cancelled: the versions loaded so far never serve
                for m in fresh:
                    m.runner.close()
                raise
            self.snapshot = new  # the swap: one assignment, no await between lookup and enqueue
            for m in fresh:
                for b in m.batchers():
                    b.start()  # (no await since the swap: no request reached it before)
            kept = {id(m) for m in keep}
            gone = [m for m in old.all() if id(m) not in kept]
            report.unloaded = [f"{m.name}/{m.version}" for m in gone]
            report.serving = [f"{m.name}/{m.version}" for m in new.all()]
            self.metrics.models_loaded.set(len(report.serving))
            for m in gone:
                log.info("event=model_unloaded model=%s/%d", m.name, m.version)
            if not gone:
                return report
            # A task owned by the registry: cancelling this reload does not interrupt the drain,
            # and close() waits for it.
            stopping = asyncio.get_running_loop().create_task(
                self._stop(gone), name="registry-stop-unloaded"
            )
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
        await asyncio.shield(stopping)
        return report

    def _routing(self, models: list[LoadedModel], old: Snapshot) -> dict[str, Routing]:
        """Each served model's routing file; an unreadable one keeps the routing it had."""
        found: dict[str, Routing] = {}
        for name in sorted({m.name for m in models}):
            try:
                found[name] = read_routing(self.settings.models_dir, name)
            except (RoutingError, OSError) as exc:
                kept = old.routing.get(name, Routing())
                found[name] = kept
                if self._bad_routing.get(name) != str(exc):
                    log.error(
                        "event=routing_unreadable model=%s error=%r (kept %s)", name, exc, kept
                    )
                self._bad_routing[name] = str(exc)
            else:
                self._bad_routing.pop(name, None)
                if found[name] != old.routing.get(name, Routing()):
                    log.info("event=routing model=%s routing=%s", name, found[name])
            primary = found[name].primary
            served = {m.version for m in models if m.name == name}
            if primary is None or primary in served:
                self._missing_primary.pop(name, None)
            elif self._missing_primary.get(name) != primary:
                log.error(
                    "event=routing_primary_not_served model=%s primary=%d serving=%s "
                    "(the newest other than the shadow answers)",
                    name,
                    primary,
                    sorted(served),
                )
                self._missing_primary[name] = primary
        return found

    async def _stop(self, models: list[LoadedModel]) -> None:
        timeout = self.settings.drain_timeout_s
        await asyncio.gather(*(b.stop(timeout) for m in models for b in m.batchers()))

    def _unchanged(self, current: LoadedModel, vdir: Path) -> bool:
        try:
            card = load_card(vdir, verify_sha256=False)
        except InvalidModelCard:
            return True  # keep serving what works; a full load attempt would only refuse it
        return card == current.card

    def _load(self, vdir: Path) -> LoadedModel:
        s = self.settings
        card = load_card(vdir, verify_sha256=True)
        opened: list[Runner] = []
        try:
            full = self._runner(vdir / card.onnx.file, card, opened)
            runner: ModelRunner = full
            header = None
            if card.name in s.cascade_models and card.cascade is not None:
                cascade = card.cascade
                cheap = next(v for v in card.variants if v.name == cascade.variant)
                path = vdir / cheap.onnx.file
                labels = (card.name, str(card.version))
                runner = CascadeRunner(
                    self._runner(path, variant_card(card, cheap), opened),
                    full,
                    cascade,
                    kept=self.metrics.cascade_rows.labels(*labels, "variant"),
                    escalated=self.metrics.cascade_rows.labels(*labels, "full"),
                )
                header = CASCADE.encode()
            objective = s.degrade_objective_ms.get(card.name) if card.variants else None
            slice_s = MAX_SLICE_S if objective is None else objective / 1000.0 / SLICES_PER_BUDGET
            batcher = self._batcher(runner, card, None, slice_s)
            if objective is None:
                return LoadedModel(card, runner, batcher, variant_header=header)
            header = header or FULL.encode()
            rungs = [self._rung(FULL, card, batcher, header)]
            for variant in order(card):
                vcard = variant_card(card, variant)
                vrunner = self._runner(vdir / variant.onnx.file, vcard, opened)
                vbatcher = self._batcher(vrunner, vcard, variant.name, slice_s)
                rungs.append(self._rung(variant.name, vcard, vbatcher, variant.name.encode()))
            return LoadedModel(card, runner, batcher, Ladder(rungs, objective), header)
        except BaseException:
            for r in opened:
                r.close()
            raise

    def _runner(self, path: Path, card: ModelCard, opened: list[Runner]) -> Runner:
        s = self.settings
        runner = Runner(path, card, intra_op_threads=s.ort_intra_op_threads)
        opened.append(runner)
        try:
            runner.warm_up(s.inline_max_cost_us, s.max_batch_rows)
        except Exception as exc:
            raise InvalidModelCard(f"{path}: warm-up failed ({exc})") from exc
        return runner

    def _batcher(
        self, runner: ModelRunner, card: ModelCard, variant: str | None, slice_s: float
    ) -> Batcher:
        """A variant's batcher has no score cache (its scores are not the model's)."""
        s = self.settings
        cache = self.cache_for(card) if self.cache_for is not None and variant is None else None
        observer = (
            self.observer_for(card, variant=variant) if self.observer_for is not None else None
        )
        return Batcher(
            runner,
            metrics=self.metrics,
            max_batch_rows=s.max_batch_rows,
            max_queue_rows=s.max_queue_rows,
            max_delay_ms=s.max_delay_ms,
            batching=s.batching,
            cache=cache,
            observer=observer,
            variant=variant,
            max_slice_s=slice_s,
        )

    def _rung(self, name: str, card: ModelCard, batcher: Batcher, header: bytes) -> Rung:
        rows = self.metrics.variant_rows.labels(card.name, str(card.version), name)
        return Rung(name, card, batcher, header, rows)

    async def close(self) -> None:
        """Refuse new work, drain every batcher (up to the drain timeout), stop them, and wait
        for the versions reloads dropped to finish stopping."""
        self.closing = True
        async with self._lock:
            await self._stop(self.snapshot.all())
            self.snapshot = Snapshot()
            self.metrics.models_loaded.set(0)
        if self._stopping:
            await asyncio.gather(*self._stopping)


def _stamp(vdir: Path) -> tuple[float, float]:
    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return mtime(vdir / CARD_FILE), mtime(vdir / ONNX_FILE)
