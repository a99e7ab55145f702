"""``/admin``: reload the model repository. Bearer token from settings; none configured = off.

Other admin endpoints (the cache flush) reuse :func:`admin_guard`::

    @post("/admin/cache/flush", guards=[admin_guard])

A disabled admin surface answers 404 (it does not exist unless turned on); a missing or wrong
token answers 401. Tokens are compared in constant time and never logged.

Failed authentications are logged (``event=admin_auth_failed`` with the client address and the
reason: ``missing``, ``scheme`` or ``token``; at most one line per 10 s, saying how many were not
logged) and limited per client address: after ``admin_auth_failures_per_minute`` failures in a
one-minute window, every admin request from that address answers 429 with Retry-After until the
window ends, whatever its token (so a token cannot be guessed at speed).
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any

import msgspec
from litestar import post
from litestar.connection import ASGIConnection
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from server.core import Core
from server.errors import AdminDisabled, Unauthorized
from server.ratelimit import FailureBudget, ThrottledLog
from server.settings import Settings

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


def _reason(authorization: str | None) -> str:
    """Why a check failed, without any of the token: missing, scheme or token."""
    if not authorization:
        return "missing"
    return "scheme" if authorization.partition(" ")[0].lower() != "bearer" else "token"


class AdminAuth:
    """The admin check of one app, with its per-client failure budget and throttled log."""

    def __init__(self, settings: Settings) -> None:
        self.budget = FailureBudget(settings.admin_auth_failures_per_minute, window_s=60.0)
        self._log = ThrottledLog(log, interval_s=10.0)

    def check(self, core: Core, authorization: str | None, client: str, path: str) -> None:
        """Raise 429 while ``client`` is over its budget, else as :func:`check_admin`."""
        wait = self.budget.blocked_for(client)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"too many failed admin authentications from {client}; "
                f"retry in {math.ceil(wait)} s",
                headers={"retry-after": str(math.ceil(wait))},
            )
        try:
            check_admin(core, authorization)
        except Unauthorized:
            failures = self.budget.failed(client)
            self._log(
                logging.WARNING,
                "event=admin_auth_failed client=%s path=%s reason=%s failures_this_minute=%d",
                client,
                path,
                _reason(authorization),
                failures,
            )
            raise


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard for admin routes: the app's Core and AdminAuth live in ``app.state``."""
    state = connection.app.state
    client = connection.client.host if connection.client else "unknown"
    state.admin_auth.check(
        state.core, connection.headers.get("authorization"), client, connection.url.path
    )


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
