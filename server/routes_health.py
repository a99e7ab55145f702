"""Health probes, Prometheus metrics, and (only when enabled) the benchmark's empty handler."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from server.core import Core, JSONBytes, json_response, read_body
from server.errors import ModelNotReady
from server.metrics import MEDIA_TYPE


class Health(msgspec.Struct):
    status: str
    models: int


def handlers(core: Core) -> list[HTTPRouteHandler]:
    @get("/health/live", tags=["health"], summary="Liveness")
    async def live() -> Health:
        return Health("live", len(core.registry.snapshot.all()))

    @get("/health/ready", tags=["health"], summary="Readiness")
    async def ready() -> Health:
        """200 when every loaded model is warmed up and serving; 503 before, or while draining."""
        if not core.registry.ready:
            raise ModelNotReady("not ready: models are loading, none loaded, or shutting down")
        return Health("ready", len(core.registry.snapshot.all()))

    @get("/metrics", tags=["health"], summary="Prometheus metrics", media_type=MEDIA_TYPE)
    async def metrics() -> Response[bytes]:
        """The Prometheus text exposition (``text/plain; version=1.0.0; charset=utf-8``)."""
        return Response(core.metrics.render(), media_type=MEDIA_TYPE)

    return [live, ready, metrics]


def floor_handlers(limit: int) -> list[HTTPRouteHandler]:
    """The benchmark's framework floor: read the body, answer fixed bytes (settings flag only)."""

    @post("/bench/floor/{name:str}", include_in_schema=False, status_code=200)
    async def floor(request: Request[Any, Any, Any], name: FromPath[str]) -> JSONBytes:
        # The same body read and response path as predict, and nothing else.
        await read_body(request.receive, limit)
        return json_response(b'{"ok":true}')

    return [floor]
