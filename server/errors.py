"""Domain errors. They say what went wrong, never how HTTP spells it.

``server.http_errors`` is the one place that maps them to status codes and to the one error body
(RFC 9457 problem details). The tree::

    TabserveError
    ├── InvalidModelCard        model.json (or its ONNX file) is malformed or inconsistent
    ├── ExportError             the export pipeline refused to publish
    │   ├── UnsupportedEstimator    no ONNX converter for this estimator
    │   └── ParityError             ONNX and native outputs differ beyond tolerance
    ├── ModelNotFound           no such model name
    │   └── VersionNotFound     the model exists, the version does not
    ├── ModelNotReady           loaded but not (yet, or any more) serving
    ├── InvalidInput            the request's rows do not fit the model's schema
    ├── PayloadTooLarge         body or batch over the configured limit
    ├── UnsupportedMediaType    a JSON route got a body declared as something else
    ├── Overloaded              queue full; carries retry_after seconds
    ├── DeadlineExceeded        the request's deadline passed before it ran
    ├── ShuttingDown            the server is draining and takes no new work
    ├── Unauthorized            admin call without the right bearer token
    ├── AdminDisabled           admin calls are off (no token configured)
    ├── UnknownFeedbackId       feedback for a request id or row hash the server never saw
    ├── CacheDisabled           a cache operation while the response cache is off
    └── CacheUnavailable        the shared cache could not be reached for an operation that
        │                       needs it (predictions never raise this: they fail open)
        └── FlushFailed             (server.cache.generations) a flush did not reach Redis
"""

from __future__ import annotations


class TabserveError(Exception):
    """Base of every error tabserve raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidModelCard(TabserveError):
    """model.json is malformed, inconsistent, or does not match its ONNX file."""


class ExportError(TabserveError):
    """The export pipeline refused to publish a model version."""


class UnsupportedEstimator(ExportError):
    """There is no ONNX converter for the given estimator."""


class ParityError(ExportError):
    """ONNX outputs differ from the native model's beyond the tolerance."""


class ModelNotFound(TabserveError):
    """No model with that name is loaded."""


class VersionNotFound(ModelNotFound):
    """The model exists but not that version."""


class ModelNotReady(TabserveError):
    """The model is loaded but not serving (warming up, or draining)."""


class InvalidInput(TabserveError):
    """The request's rows do not fit the model's input schema."""


class PayloadTooLarge(TabserveError):
    """The body or the batch is over the configured limit."""


class UnsupportedMediaType(TabserveError):
    """A JSON route got a body whose Content-Type is not JSON."""


class Overloaded(TabserveError):
    """The model's queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DeadlineExceeded(TabserveError):
    """The request's deadline passed before it could run."""


class ShuttingDown(TabserveError):
    """The server is draining and accepts no new work."""


class Unauthorized(TabserveError):
    """Admin call without a valid bearer token."""


class AdminDisabled(TabserveError):
    """Admin endpoints are disabled because no admin token is configured."""


class UnknownFeedbackId(TabserveError):
    """Feedback names a request id or row hash that the server has not seen (or has forgotten)."""


class CacheDisabled(TabserveError):
    """A cache operation (e.g. a flush) while the response cache is off."""


class CacheUnavailable(TabserveError):
    """The shared cache could not be reached for an operation that needs it (not predictions)."""


class RoutingConflict(TabserveError):
    """A routing change that cannot apply now (no shadow to promote, nothing to roll back to, a
    shadow whose input columns differ from the primary's, a repository that cannot be written)."""
