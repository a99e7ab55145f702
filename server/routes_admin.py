"""``/admin``: reload the model repository. Bearer token from settings; none configured = off.

Other admin endpoints (the cache flush) reuse :func:`admin_guard`::

    @post("/admin/cache/flush", guards=[admin_guard])

A disabled admin surface answers 404 (it does not exist unless turned on); a missing or wrong
token answers 401. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import msgspec
from litestar import post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from server.core import Core
from server.errors import AdminDisabled, Unauthorized

log = logging.getLogger("tabserve.admin")


def check_admin(core: Core, authorization: str | None) -> None:
    """Raise unless ``authorization`` is ``Bearer <the configured admin token>``."""
    token = core.settings.admin_token
    if token is None or not token.get_secret_value():
        raise AdminDisabled("admin endpoints are disabled (no admin token configured)")
    scheme, _, given = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("admin endpoints need 'Authorization: Bearer <admin token>'")


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard for admin routes: the app's Core lives in ``app.state.core``."""
    check_admin(connection.app.state.core, connection.headers.get("authorization"))


class ReloadResult(msgspec.Struct):
    loaded: list[str]
    """Versions loaded by this reload."""
    unloaded: list[str]
    """Versions that left (drained and stopped)."""
    refused: dict[str, str]
    """Versions refused, with the reason."""
    serving: list[str]
    """Everything served after the reload."""


def handlers(core: Core) -> list[HTTPRouteHandler]:
    @post(
        "/admin/reload",
        guards=[admin_guard],
        tags=["admin"],
        status_code=200,
        summary="Rescan the model repository",
    )
    async def reload() -> ReloadResult:
        """Load new or changed versions, drop vanished ones; the swap is atomic and in-flight
        requests finish on the version they were routed to."""
        report = await core.registry.reload()
        log.info(
            "event=admin_reload loaded=%s unloaded=%s refused=%d",
            report.loaded,
            report.unloaded,
            len(report.refused),
        )
        return ReloadResult(report.loaded, report.unloaded, report.refused, report.serving)

    return [reload]
