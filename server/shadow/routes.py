"""Routes of the shadow and of promotion.

- ``GET /v1/models/{name}/shadow``: the primary, the shadow, the scorer's counters, both live
  qualities and the paired comparison with the automatic rule's verdict.
- ``POST /admin/models/{name}/shadow`` ``{"version": 4}``: version 4 scores a copy of the
  primary's traffic from now on (``{"version": null}`` stops it). 404 for a version not served,
  409 for one whose input columns, task or classes differ from the primary's, or the primary.
- ``POST /admin/models/{name}/promote`` ``{"version": 4}`` (or ``{}``: the shadow): version 4
  answers from now on; the version it replaces is remembered for a rollback.
- ``POST /admin/models/{name}/rollback``: the previous primary answers again.

Each admin call rewrites ``models/<name>/routing.json`` (with a line in
``routing-events.jsonl``: what, who, why) and reloads this worker at once; other workers follow at
their next repository scan. The answer is the routing after the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from server.errors import InvalidInput, RoutingConflict
from server.openapi_docs import ROUTING_BODY, with_json_body
from server.request_meta import check_json_media_type
from server.routes_admin import admin_guard
from server.routing import Action, Routing, RoutingError, update_routing

if TYPE_CHECKING:
    from server.shadow.extension import ShadowExtension

log = logging.getLogger("tabserve.shadow")


class VersionChoice(msgspec.Struct, forbid_unknown_fields=True):
    version: int | None = None
    reason: str = ""
    """Why (kept in the routing events)."""


class RoutingAnswer(msgspec.Struct):
    model: str
    primary: int
    """The version that answers now."""
    shadow: int | None
    previous: list[int]
    """Earlier primaries, oldest first."""


_decode_choice = msgspec.json.Decoder(VersionChoice).decode


async def _choice(request: Request[Any, Any, Any]) -> VersionChoice:
    content_type = request.headers.get("content-type")
    if content_type is not None:
        check_json_media_type(content_type.encode("latin-1"))
    body = await request.body()
    try:
        return _decode_choice(body or b"{}")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"body: {exc}") from exc


def handlers(ext: ShadowExtension) -> list[HTTPRouteHandler]:
    # The body is read by _choice, not by Litestar: its schema goes into the OpenAPI document here.
    routing_op = with_json_body(ROUTING_BODY, "The version and the reason.")

    def core() -> Any:
        if ext.core is None:
            raise RoutingConflict("the server is not serving")
        return ext.core

    async def change(
        name: str, edit: Callable[[Routing], Routing], action: Action, reason: str
    ) -> RoutingAnswer:
        c = core()
        try:
            await asyncio.to_thread(
                update_routing,
                c.settings.models_dir,
                name,
                edit,
                action=action,
                by="admin",
                reason=reason,
            )
        except RoutingError as exc:
            raise RoutingConflict(str(exc)) from exc
        except OSError as exc:
            raise RoutingConflict(f"cannot write the routing of {name!r}: {exc}") from exc
        await c.registry.reload()
        primary = c.registry.get(name)
        route = c.registry.snapshot.routing.get(name, Routing())
        shadow = c.registry.snapshot.shadows.get(name)
        log.warning(
            "event=routing_changed model=%s action=%s primary=%d shadow=%s reason=%r",
            name,
            action,
            primary.version,
            shadow.version if shadow else None,
            reason,
        )
        return RoutingAnswer(
            model=name,
            primary=primary.version,
            shadow=shadow.version if shadow is not None else None,
            previous=list(route.previous),
        )

    @get("/v1/models/{name:str}/shadow", tags=["monitoring"], summary="Shadow and primary")
    async def shadow_view(name: FromPath[str]) -> dict[str, Any]:
        """The shadow scoring a copy of the primary's traffic: both live qualities, the paired
        comparison on the rows both answered, and the automatic promotion rule's verdict."""
        core()
        return ext.describe(name)

    @post(
        "/admin/models/{name:str}/shadow",
        guards=[admin_guard],
        tags=["admin"],
        status_code=200,
        summary="Put a version in shadow (or stop it)",
        operation_class=routing_op,
    )
    async def set_shadow(request: Request[Any, Any, Any], name: FromPath[str]) -> RoutingAnswer:
        """``{"version": N}``: N scores a copy of the primary's traffic, never answering;
        ``{"version": null}``: no shadow."""
        choice = await _choice(request)
        c = core()
        primary = c.registry.get(name)
        if choice.version is None:
            return await change(name, lambda r: r.with_shadow(None), "unshadow", choice.reason)
        candidate = c.registry.get(name, choice.version)
        if candidate is primary:
            raise RoutingConflict(f"version {choice.version} is the primary")
        from server.shadow.extension import compatibility

        problem = compatibility(primary.card, candidate.card)
        if problem is not None:
            raise RoutingConflict(f"version {choice.version} cannot shadow: {problem}")
        serving = primary.version
        return await change(
            name,
            lambda r: r.pinned(r.primary or serving).with_shadow(choice.version),
            "shadow",
            choice.reason,
        )

    @post(
        "/admin/models/{name:str}/promote",
        guards=[admin_guard],
        tags=["admin"],
        status_code=200,
        summary="Make a version (by default the shadow) answer",
        operation_class=routing_op,
    )
    async def promote(request: Request[Any, Any, Any], name: FromPath[str]) -> RoutingAnswer:
        """``{"version": N}`` or ``{}`` for the shadow: it answers from the next request on."""
        choice = await _choice(request)
        c = core()
        primary = c.registry.get(name)
        version = choice.version
        if version is None:
            shadow = c.registry.snapshot.shadows.get(name)
            if shadow is None:
                raise RoutingConflict(f"model {name!r} has no shadow to promote")
            version = shadow.version
        c.registry.get(name, version)  # 404 for a version not served
        serving = primary.version
        return await change(name, lambda r: r.promoted(version, serving), "promote", choice.reason)

    @post(
        "/admin/models/{name:str}/rollback",
        guards=[admin_guard],
        tags=["admin"],
        status_code=200,
        summary="Return to the previous primary",
        operation_class=routing_op,
    )
    async def rollback(request: Request[Any, Any, Any], name: FromPath[str]) -> RoutingAnswer:
        choice = await _choice(request)
        c = core()
        c.registry.get(name)
        served = c.registry.snapshot.versions.get(name, {})

        def back(r: Routing) -> Routing:
            new = r.rolled_back()
            if new.primary not in served:
                raise RoutingError(f"the previous primary {new.primary} is not served")
            return new

        return await change(name, back, "rollback", choice.reason)

    return [shadow_view, set_shadow, promote, rollback]
