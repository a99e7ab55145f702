"""The one mapping from errors to HTTP: status code, headers and an RFC 9457 problem body.

Every error response of the server, whether raised by tabserve (``server.errors``) or by
Litestar itself (no such route, wrong method, body over the size limit), is
``application/problem+json``::

    {"type": "urn:tabserve:problem:invalid-input", "title": "Invalid input", "status": 400,
     "detail": "model logreg expects 30 features per row, got 29", "request_id": "…",
     "error": "model logreg expects 30 features per row, got 29"}

One shape on every path: ``error`` repeats ``detail`` because Open Inference Protocol (KServe
V2) clients read ``error``; /v1 carries it too, so a client parses one body. Unexpected
exceptions are logged with the request id and answered 500 without internals; answers expected
under overload or a Redis outage (503 overloaded, 504 deadline exceeded, 503 cache unavailable)
are counted in the metrics, not logged.

Disabled admin endpoints (no admin token configured) answer 404, so the admin surface is
invisible unless it is turned on; a wrong or missing token answers 401.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from server import errors
from server.request_meta import new_request_id, valid_request_id

log = logging.getLogger("tabserve.http")

PROBLEM_JSON = "application/problem+json"

# error class -> (status, slug, title); the first matching class in MRO order wins.
_DOMAIN: dict[type[errors.TabserveError], tuple[int, str, str]] = {
    errors.VersionNotFound: (404, "version-not-found", "Model version not found"),
    errors.ModelNotFound: (404, "model-not-found", "Model not found"),
    errors.ModelNotReady: (503, "model-not-ready", "Model not ready"),
    errors.InvalidInput: (400, "invalid-input", "Invalid input"),
    errors.PayloadTooLarge: (413, "payload-too-large", "Payload too large"),
    errors.UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    errors.Overloaded: (503, "overloaded", "Overloaded"),
    errors.DeadlineExceeded: (504, "deadline-exceeded", "Deadline exceeded"),
    errors.ShuttingDown: (503, "shutting-down", "Shutting down"),
    errors.Unauthorized: (401, "unauthorized", "Unauthorized"),
    errors.AdminDisabled: (404, "admin-disabled", "Admin endpoints disabled"),
    errors.UnknownFeedbackId: (404, "unknown-feedback-id", "Unknown feedback id"),
    errors.CacheDisabled: (404, "cache-disabled", "Cache disabled"),
    errors.CacheUnavailable: (503, "cache-unavailable", "Cache unavailable"),
    errors.RoutingConflict: (409, "routing-conflict", "Routing conflict"),
    errors.InvalidModelCard: (500, "invalid-model", "Invalid model"),
    errors.ExportError: (500, "export-error", "Export error"),
}

# 5xx answers that are expected under overload or a Redis outage and counted in the metrics: no
# ERROR log line per request (that would flood the log, on the event loop, exactly when loaded).
_EXPECTED_UNDER_LOAD = (
    errors.Overloaded,
    errors.DeadlineExceeded,
    errors.ShuttingDown,
    errors.ModelNotReady,
    errors.CacheUnavailable,
)

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


class Problem(msgspec.Struct):
    """The one error body (RFC 9457 problem details plus two members)."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    error: str | None = None
    """Always ``detail`` (set when left out): Open Inference Protocol clients read this member."""

    def __post_init__(self) -> None:
        self.error = self.detail


_encode = msgspec.json.Encoder().encode


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception maps to (used for metrics labels)."""
    if isinstance(exc, errors.TabserveError):
        return _domain(exc)[0]
    if isinstance(exc, HTTPException):
        return exc.status_code
    return 500


def _domain(exc: errors.TabserveError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        found = _DOMAIN.get(cls)
        if found is not None:
            return found
    return 500, "internal", "Internal error"


def request_id_of(request: Request[Any, Any, Any]) -> str:
    state = request.scope.get("state")
    if isinstance(state, dict) and isinstance(state.get("request_id"), str):
        return str(state["request_id"])
    for key, value in request.scope.get("headers", ()):
        if key == b"x-request-id":
            request_id = valid_request_id(value)
            if request_id is not None:
                return request_id
    return new_request_id()


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    request_id = request_id_of(request)
    body = Problem(
        type=f"urn:tabserve:problem:{slug}",
        title=title,
        status=status,
        detail=detail,
        request_id=request_id,
    )
    out_headers = {"x-request-id": request_id}
    if headers:
        out_headers.update(headers)
    return Response(
        content=_encode(body), status_code=status, media_type=PROBLEM_JSON, headers=out_headers
    )


def handle_domain(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, errors.TabserveError)
    status, slug, title = _domain(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Overloaded):
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, errors.ShuttingDown | errors.CacheUnavailable):
        headers["retry-after"] = "1"
    elif isinstance(exc, errors.Unauthorized):
        headers["www-authenticate"] = 'Bearer realm="tabserve-admin"'
    if status >= 500 and not isinstance(exc, _EXPECTED_UNDER_LOAD):
        log.error(
            "event=error request_id=%s status=%d detail=%r",
            request_id_of(request),
            status,
            exc.detail,
        )
    return problem_response(request, status, slug, title, exc.detail, headers)


def handle_http(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    slug, title = _HTTP_SLUGS.get(status, ("http-error", "HTTP error"))
    detail = exc.detail or title
    if status == 400 and exc.extra:
        detail = f"{detail}: {exc.extra}"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, status, slug, title, str(detail), headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    request_id = request_id_of(request)
    log.error(
        "event=unhandled_error request_id=%s path=%s",
        request_id,
        request.scope.get("path"),
        exc_info=exc,
    )
    return problem_response(
        request,
        500,
        "internal",
        "Internal error",
        f"unexpected server error; quote request id {request_id}",
    )


EXCEPTION_HANDLERS = {
    errors.TabserveError: handle_domain,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}
"""Pass to ``Litestar(exception_handlers=...)``."""
