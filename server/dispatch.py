"""The request path straight from ASGI: predict and infer ahead of Litestar's router.

``POST /v1/models/{name}/predict``, ``/v1/models/{name}/versions/{v}/predict``,
``/v2/models/{name}/infer`` and ``/v2/models/{name}/versions/{v}/infer`` are matched here, with
a split of the path, and go straight to :meth:`server.core.Core.predict`. Everything else, and
these paths with any other method, goes on to Litestar. The routes are still declared as Litestar
handlers (the OpenAPI schema documents them; with ``TABSERVE_FAST_DISPATCH=false`` they serve),
and both ways run the same ``Core.predict`` and render errors with the same exception handlers
(``server.http_errors``), so a client cannot tell them apart except by speed: Litestar's routing,
handler signature and response machinery cost 30-37 µs of server CPU per request on this
machine (``tabserve bench`` prints both floors), more than running the small XGBoost model.

With ``bench_floor_route`` on, ``POST /bench/floor-asgi/{name}`` is the empty handler on this
dispatch (read the body, answer fixed bytes), the floor ``tabserve bench`` compares predict
against besides Litestar's own empty handler.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.exceptions import ClientException
from litestar.types import ASGIApp, Receive, Scope, Send

from server.core import Core, Route, json_response, read_body
from server.http_errors import EXCEPTION_HANDLERS
from server.request_meta import canonical_version
from server.routes_v1 import V1
from server.routes_v2 import V2

_ROUTES: dict[tuple[str, str], Route[Any]] = {("v1", "predict"): V1, ("v2", "infer"): V2}

Match = tuple[str, int | None, Route[Any]]


def match(path: str) -> Match | None:
    """``(name, version or None, route)`` for a predict or infer path, else None."""
    parts = path.split("/")
    n = len(parts)
    if n == 5:  # '', v1, models, {name}, predict
        version = None
    elif n == 7 and parts[4] == "versions":  # '', v1, models, {name}, versions, {v}, predict
        version = canonical_version(parts[5])
        if version is None:
            return None  # Litestar's handler answers it (404), the same way on both paths
    else:
        return None
    if parts[0] or parts[2] != "models" or not parts[3]:
        return None
    route = _ROUTES.get((parts[1], parts[-1]))
    if route is None:
        return None
    return parts[3], version, route


class FastDispatch:
    """The ASGI handler of the app: predict and infer here, the rest to ``inner`` (Litestar's)."""

    def __init__(self, inner: ASGIApp, core: Core, *, floor: bool) -> None:
        self.inner = inner
        self.core = core
        self.floor = floor
        self.limit = core.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            path: str = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):  # as Litestar's router: routes under the root
                path = path[len(root) :]
            found = match(path)
            if found is not None:
                name, version, route = found
                try:
                    _check_host(scope)
                    response = await self.core.predict(scope, receive, name, version, route)
                except Exception as exc:
                    await self._error(scope, receive, send, exc)
                    return
                await response(scope, receive, send)
                return
            if self.floor and path.startswith("/bench/floor-asgi/"):
                await self._floor(scope, receive, send)
                return
        await self.inner(scope, receive, send)

    async def _floor(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await read_body(receive, self.limit)
        except Exception as exc:
            await self._error(scope, receive, send, exc)
            return
        await _FLOOR(scope, receive, send)

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """The answer Litestar's exception middleware would give: same handlers, same body."""
        request: Request[Any, Any, Any] = Request(scope, receive)
        handler = _handler_for(exc)
        response = handler(request, exc)
        await response.to_asgi_response(None, request)(scope, receive, send)


_FLOOR = json_response(b'{"ok":true}')

# Litestar's router refuses a malformed Host header (400); the same rule, so both paths agree.
_HOST = re.compile(rb"\A[0-9A-Za-z!$&'()*+,;=\-._~:\[\]@%]*\Z", re.IGNORECASE)


def _check_host(scope: Scope) -> None:
    global _last_host
    for key, value in scope["headers"]:
        if key == b"host":
            if value != _last_host:  # a client sends the same Host on every request
                if _HOST.match(value) is None:
                    raise ClientException("Invalid host header")
                _last_host = value
            return


_last_host = b""
"""The last Host value found well formed (one comparison instead of the pattern per request)."""


def _handler_for(exc: Exception) -> Callable[[Request[Any, Any, Any], Exception], Any]:
    for cls in type(exc).__mro__:
        handler = EXCEPTION_HANDLERS.get(cls)
        if handler is not None:
            return handler
    return EXCEPTION_HANDLERS[Exception]


def install(app: Litestar, core: Core, *, floor: bool) -> None:
    """Put :class:`FastDispatch` in front of the app's middleware stack (lifespan untouched)."""
    app.asgi_handler = FastDispatch(app.asgi_handler, core, floor=floor)
