"""The Litestar app: everything wired in one place.

``create_app(settings)`` builds the app; its lifespan loads the registry (one batcher per model
version, warmed up before ready), completes the OpenAPI document from the loaded model cards
(``server.openapi_docs``), runs the periodic repository scan, starts and stops the extensions,
and on shutdown drains and stops every batcher. Under ``tabserve serve`` the drain starts as soon
as the server stops listening (``server.connections`` calls the hook the lifespan installs), not
after uvicorn's graceful wait, so queued requests are answered, or refused with 503, within the
drain timeout; the lifespan's exit then waits for that drain.

Extensions (the cache in ``server/cache/``, monitoring in ``server/monitoring/``) plug in by
subclassing :class:`server.extension.Extension` and being passed to
``create_app(..., extensions=[...])``; for
``tabserve serve`` they are listed in :func:`default_extensions`. An extension can add routes,
register metrics on ``core.metrics.registry``, hold loop-bound resources between ``start`` and
``stop``, and give each model version a score cache and/or a batch observer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Sequence

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from server import (
    dispatch,
    gcpauses,
    openapi_docs,
    routes_admin,
    routes_health,
    routes_v1,
    routes_v2,
)
from server.batcher import BatchObserver, ScoreCache
from server.cache.extension import CacheExtension
from server.connections import ConnectionPolicy
from server.core import Core
from server.extension import Extension, FanOut
from server.http_errors import EXCEPTION_HANDLERS
from server.logsetup import configure_logging
from server.metrics import ServerMetrics
from server.modelcard import ModelCard
from server.monitoring.extension import MonitoringExtension
from server.oip.extension import GrpcExtension
from server.predlog import PredictionLogExtension
from server.registry import Registry
from server.retrain_trigger import RetrainTrigger
from server.settings import Settings
from server.shadow.extension import ShadowExtension
from server.workershare import WorkerShareExtension, share_dir

log = logging.getLogger("tabserve.app")


def default_extensions(settings: Settings) -> list[Extension]:
    """The extensions ``tabserve serve`` runs with (the cache and monitoring register here)."""
    extensions: list[Extension] = []
    if settings.cache:
        extensions.append(CacheExtension(settings))
    monitoring = None
    if settings.monitoring:
        # The shadow needs monitoring: its scores land in its own monitor, labels reach it
        # through the primary's.
        monitoring = MonitoringExtension(settings)
        retrain = RetrainTrigger(settings, monitoring)
        extensions += [monitoring, ShadowExtension(settings, monitoring, retrain), retrain]
    if settings.grpc_port is not None:
        extensions.append(GrpcExtension(settings))
    if settings.prediction_log_dir is not None:
        predictions = PredictionLogExtension(settings)
        extensions.append(predictions)
        if monitoring is not None:  # labels reach the log through feedback
            monitoring.label_listeners.append(predictions.labelled)
    if settings.workers > 1:
        # One /metrics across the workers of `tabserve serve --workers N`: they share a
        # directory named after their supervisor, the process that started them.
        extensions.append(WorkerShareExtension(share_dir(os.getppid())))
    return extensions


def create_app(
    settings: Settings | None = None,
    *,
    extensions: Sequence[Extension] = (),
    metrics: ServerMetrics | None = None,
    freeze_heap: bool = False,
) -> Litestar:
    """The app for ``settings`` (read from the environment when omitted).

    ``freeze_heap`` (what ``tabserve serve`` does): once the models are loaded, collect once and
    move every object alive then (modules, sessions, cards, routes) out of the collector's reach
    (``gc.freeze``), so a full collection on the request path walks only what requests made,
    and collect the young generation less often (``TABSERVE_GC_YOUNG_THRESHOLD``). Not for tests
    that build many apps in one process: frozen objects are never freed.
    """
    settings = settings if settings is not None else Settings()
    metrics = metrics if metrics is not None else ServerMetrics()
    gcpauses.install()  # the process's collections, timed once whatever the apps
    gcpauses.GcPauseHistogram(metrics.registry)
    exts = list(extensions)

    def cache_for(card: ModelCard) -> ScoreCache | None:
        for ext in exts:
            cache = ext.cache_for(card)
            if cache is not None:
                return cache
        return None

    def observer_for(card: ModelCard, *, variant: str | None = None) -> BatchObserver | None:
        made = (ext.observer_for(card, variant=variant) for ext in exts)
        found = [o for o in made if o is not None]
        if not found:
            return None
        return found[0] if len(found) == 1 else FanOut(found)

    registry = Registry(settings, metrics, cache_for=cache_for, observer_for=observer_for)
    core = Core(settings, metrics, registry)
    connections = ConnectionPolicy.from_settings(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        started: list[Extension] = []
        scan: asyncio.Task[None] | None = None
        stop_scan = asyncio.Event()
        drain: asyncio.Task[None] | None = None

        def begin_drain() -> None:
            """The server stopped listening (``server.connections``): drain now, not after
            uvicorn's graceful wait, so queued requests are answered within the drain timeout."""
            nonlocal drain
            if drain is None:
                log.info("event=shutdown_started drain_timeout_s=%g", settings.drain_timeout_s)
                drain = asyncio.get_running_loop().create_task(registry.close(), name="drain")
                for ext in started:  # e.g. the gRPC server stops taking calls
                    ext.draining()

        try:
            for ext in exts:
                await ext.start(core)
                started.append(ext)
            report = await registry.reload(in_thread=False)
            log.info(
                "event=ready models_dir=%s serving=%s refused=%d",
                settings.models_dir,
                report.serving,
                len(report.refused),
            )
            openapi_docs.document(app.openapi_schema, [m.card for m in registry.snapshot.all()])
            connections.on_shutdown = begin_drain
            if freeze_heap:
                gc.collect()
                gc.freeze()
                gc.set_threshold(settings.gc_young_threshold, *gc.get_threshold()[1:])
            if settings.reload_interval_s > 0:
                scan = asyncio.get_running_loop().create_task(
                    _periodic_scan(registry, settings.reload_interval_s, stop_scan),
                    name="model-scan",
                )
            yield
        finally:
            connections.on_shutdown = None
            if drain is not None:
                await drain
            if scan is not None:
                stop_scan.set()  # not cancel(): a reload in progress finishes (or refuses) first
                await scan
            await registry.close()
            for ext in reversed(started):
                try:
                    await ext.stop()
                except Exception:
                    log.exception("event=extension_stop_failed extension=%s", type(ext).__name__)

    route_handlers: list[ControllerRouterHandler] = []
    ours: list[HTTPRouteHandler] = [
        *routes_v1.handlers(core),
        *routes_v2.handlers(core),
        *routes_health.handlers(core),
        *routes_admin.handlers(core),
    ]
    if settings.bench_floor_route:
        ours += routes_health.floor_handlers(settings.max_body_bytes)
    route_handlers.extend(ours)
    route_handlers.append(
        create_static_files_router(
            openapi_docs.ASSETS_PATH,
            directories=[openapi_docs.swagger_ui_assets()],
            include_in_schema=False,
        )
    )
    for ext in exts:
        route_handlers.extend(ext.route_handlers())

    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="tabserve",
            version="0.1.0",
            description="Low-latency inference for tabular models (ONNX Runtime).",
            path="/schema",
            render_plugins=[openapi_docs.swagger_ui()],
        ),
        debug=False,
        logging_config=None,  # tabserve configures its own loggers (server.logsetup)
    )
    app.state.core = core
    app.state.extensions = exts  # (tests and tools find an extension here)
    app.state.connections = connections  # read by server.connections.TabserveHttpProtocol
    app.state.admin_auth = routes_admin.AdminAuth(settings)
    if settings.fast_dispatch:
        dispatch.install(app, core, floor=settings.bench_floor_route)
    return app


async def _periodic_scan(registry: Registry, interval_s: float, stop: asyncio.Event) -> None:
    """Reload every ``interval_s`` until ``stop`` is set."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            report = await registry.reload()
            if report.loaded or report.unloaded:
                log.info("event=scan_reload loaded=%s unloaded=%s", report.loaded, report.unloaded)
        except Exception:
            log.exception("event=scan_failed")


def create_app_from_env() -> Litestar:
    """Uvicorn factory for worker processes: settings come from TABSERVE_* variables."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, extensions=default_extensions(settings), freeze_heap=True)
