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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from server.batcher import Batcher, BatchObserver, ScoreCache
from server.errors import InvalidModelCard, ModelNotFound, ShuttingDown, VersionNotFound
from server.metrics import ServerMetrics
from server.modelcard import CARD_FILE, ONNX_FILE, ModelCard, load_card, version_dirs
from server.runner import Runner
from server.settings import Settings

log = logging.getLogger("tabserve.registry")

CacheFactory = Callable[[ModelCard], ScoreCache | None]
ObserverFactory = Callable[[ModelCard], BatchObserver | None]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One served model version."""

    card: ModelCard
    runner: Runner
    batcher: Batcher

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

    @classmethod
    def of(cls, models: Iterable[LoadedModel]) -> Snapshot:
        versions: dict[str, dict[int, LoadedModel]] = {}
        for m in sorted(models, key=lambda m: (m.name, m.version)):
            versions.setdefault(m.name, {})[m.version] = m
        latest = {name: by_version[max(by_version)] for name, by_version in versions.items()}
        return cls(versions, latest)

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
                new = Snapshot.of(keep + fresh)
            except BaseException:  # e.g. cancelled: the versions loaded so far never serve
                for m in fresh:
                    m.runner.close()
                raise
            self.snapshot = new  # the swap: one assignment, no await between lookup and enqueue
            for m in fresh:
                m.batcher.start()  # (no await since the swap: no request reached it before)
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

    async def _stop(self, models: list[LoadedModel]) -> None:
        await asyncio.gather(*(m.batcher.stop(self.settings.drain_timeout_s) for m in models))

    def _unchanged(self, current: LoadedModel, vdir: Path) -> bool:
        try:
            card = load_card(vdir, verify_sha256=False)
        except InvalidModelCard:
            return True  # keep serving what works; a full load attempt would only refuse it
        return card == current.card

    def _load(self, vdir: Path) -> LoadedModel:
        s = self.settings
        card = load_card(vdir, verify_sha256=True)
        runner = Runner(vdir / card.onnx.file, card, intra_op_threads=s.ort_intra_op_threads)
        try:
            runner.warm_up(s.inline_max_cost_us, s.max_batch_rows)
        except Exception as exc:
            runner.close()
            raise InvalidModelCard(f"{vdir}: warm-up failed ({exc})") from exc
        batcher = Batcher(
            runner,
            metrics=self.metrics,
            max_batch_rows=s.max_batch_rows,
            max_queue_rows=s.max_queue_rows,
            max_delay_ms=s.max_delay_ms,
            batching=s.batching,
            cache=self.cache_for(card) if self.cache_for is not None else None,
            observer=self.observer_for(card) if self.observer_for is not None else None,
        )
        return LoadedModel(card=card, runner=runner, batcher=batcher)

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
