"""The one mapping from errors to gRPC status codes (``server.http_errors`` is HTTP's).

=======================  ====================  ==========================================
domain error             gRPC status           HTTP equivalent (metrics label)
=======================  ====================  ==========================================
InvalidInput             INVALID_ARGUMENT      400
PayloadTooLarge          INVALID_ARGUMENT      413 (too many rows for one request)
ModelNotFound            NOT_FOUND             404 (VersionNotFound too)
Overloaded               RESOURCE_EXHAUSTED    503 (queue full; ``retry-after`` trailer)
DeadlineExceeded         DEADLINE_EXCEEDED     504
ShuttingDown             UNAVAILABLE           503 (draining)
ModelNotReady            UNAVAILABLE           503
CacheUnavailable         UNAVAILABLE           503
anything else            INTERNAL              500 (logged with the request id)
=======================  ====================  ==========================================

The status message is the error's ``detail``, the same text the HTTP problem body carries.
"""

from __future__ import annotations

import logging
import math

import grpc

from server import errors
from server.http_errors import status_of

log = logging.getLogger("tabserve.grpc")

_CODES: dict[type[errors.TabserveError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.PayloadTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.CacheUnavailable: grpc.StatusCode.UNAVAILABLE,
}


class GrpcError:
    """What an exception becomes on a gRPC call: code, message, trailing metadata, and the HTTP
    status its request is counted under in the metrics."""

    __slots__ = ("code", "http_status", "message", "trailers")

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        http_status: int,
        trailers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        self.trailers = trailers


class Abort(Exception):
    """Raised by a method to end its call with ``error`` (the call's status and trailers)."""

    def __init__(self, error: GrpcError) -> None:
        super().__init__(error.message)
        self.error = error


def grpc_error(exc: BaseException, request_id: str) -> GrpcError:
    status = status_of(exc)
    if isinstance(exc, errors.TabserveError):
        for cls in type(exc).__mro__:
            code = _CODES.get(cls)
            if code is not None:
                trailers: tuple[tuple[str, str], ...] = (("x-request-id", request_id),)
                if isinstance(exc, errors.Overloaded):
                    retry = str(max(1, math.ceil(exc.retry_after)))
                    trailers += (("retry-after", retry),)
                elif code is grpc.StatusCode.UNAVAILABLE:
                    trailers += (("retry-after", "1"),)
                return GrpcError(code, exc.detail, status, trailers)
        log.error("event=error request_id=%s status=%d detail=%r", request_id, status, exc.detail)
        return GrpcError(grpc.StatusCode.INTERNAL, exc.detail, status)
    log.error("event=unhandled_error request_id=%s rpc=grpc", request_id, exc_info=exc)
    return GrpcError(
        grpc.StatusCode.INTERNAL, f"unexpected server error; quote request id {request_id}", 500
    )
