"""``POST /admin/models/{name}/cache/flush``: drop one model's cached rows, no other model's.

A flush bumps the model's generation (part of every key), so it costs one Redis ``INCR`` and no
keyspace scan. This process forgets the model's in-process entries at once; other workers and
replicas stop using the old generation within ``TABSERVE_CACHE_GENERATION_REFRESH_S`` (see
:mod:`server.cache.generations`). Without Redis a flush reaches only the worker that served it.

Errors (problem+json): 401/404 from :func:`~server.routes_admin.admin_guard`, 404 unknown model
or cache off, 503 ``cache-unavailable`` (with ``Retry-After``) when Redis could not be reached:
the flush did not reach other workers, retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from litestar import post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from server.routes_admin import admin_guard

if TYPE_CHECKING:
    from server.cache.extension import CacheExtension


class FlushResult(msgspec.Struct):
    model: str
    generation: int
    """The model's new cache generation: keys built before the flush are never read again."""


def handlers(ext: CacheExtension) -> list[HTTPRouteHandler]:
    @post(
        "/admin/models/{name:str}/cache/flush",
        guards=[admin_guard],
        tags=["admin"],
        status_code=200,
        summary="Flush one model's cached rows",
    )
    async def flush_model_cache(name: FromPath[str]) -> FlushResult:
        """Every version of the model; other models' entries are untouched. 503 when Redis could
        not be reached (other workers did not see the flush; retry)."""
        generation = await ext.flush(name)
        return FlushResult(model=name, generation=generation)

    return [flush_model_cache]
