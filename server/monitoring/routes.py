"""HTTP routes of monitoring: the drift/quality snapshot and label feedback.

- ``GET /v1/models/{name}/monitoring`` (latest version) and
  ``GET /v1/models/{name}/versions/{version}/monitoring``: the snapshot documented in
  :mod:`server.monitoring`.
- ``POST /v1/models/{name}/feedback`` with ``{"request_id": str, "row": int, "label": int}`` or
  ``{"row_hash": str, "label": int}``: the label of a served row. Without a version in the path,
  the served versions are searched newest first (a request answered before a new version
  loaded still finds its row). ``POST /v1/models/{name}/versions/{version}/feedback`` looks in
  that version only. An unknown or forgotten row answers 404 (``unknown-feedback-id``), a bad
  body or a label that is not a class answers 400 (``invalid-input``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from server.errors import InvalidInput, UnknownFeedbackId
from server.monitoring.monitor import ModelMonitor
from server.openapi_docs import FEEDBACK_BODY, with_json_body
from server.request_meta import check_json_media_type, path_version

if TYPE_CHECKING:
    from server.monitoring.extension import MonitoringExtension


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A true label for one served row, named by request id and row index, or by row hash."""

    label: int
    request_id: str | None = None
    row: int = 0
    """Row index within the request (0 for single-row requests)."""
    row_hash: str | None = None
    """blake2b (16-byte digest, hex) of the row's little-endian float32 bytes."""


class FeedbackResponse(msgspec.Struct):
    model: str
    version: int
    matched_by: str
    """"request_id" or "row_hash"."""
    score: float
    """The positive-class score the server answered for that row."""
    predicted_positive: bool
    label: int
    replaced: bool
    """True when this label replaced an earlier one for the same row."""


_decode_feedback = msgspec.json.Decoder(FeedbackRequest).decode


async def _parse(request: Request[Any, Any, Any]) -> FeedbackRequest:
    """The feedback body: JSON by Content-Type (415 otherwise, none is read as JSON), then
    decoded strictly (400)."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        check_json_media_type(content_type.encode("latin-1"))
    body = await request.body()
    try:
        return _decode_feedback(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"feedback body: {exc}") from exc


def _give(monitors: list[ModelMonitor], body: FeedbackRequest) -> FeedbackResponse:
    last: UnknownFeedbackId | None = None
    for monitor in monitors:
        try:
            result = monitor.feedback(
                label=body.label, request_id=body.request_id, row=body.row, row_hash=body.row_hash
            )
        except UnknownFeedbackId as exc:
            last = exc
            continue
        return FeedbackResponse(
            model=monitor.card.name,
            version=monitor.card.version,
            matched_by=result.matched_by,
            score=result.score,
            predicted_positive=result.predicted_positive,
            label=result.label,
            replaced=result.replaced,
        )
    raise last if last is not None else UnknownFeedbackId("no served version has a monitor")


def handlers(ext: MonitoringExtension) -> list[HTTPRouteHandler]:
    # The body is read by _parse, not by Litestar: its schema goes into the OpenAPI document here.
    feedback_op = with_json_body(FEEDBACK_BODY, "The true label of one served row.")

    @get("/v1/models/{name:str}/monitoring", tags=["monitoring"], summary="Drift and quality")
    async def monitoring_latest(name: FromPath[str]) -> dict[str, Any]:
        """Input drift (PSI, KS per feature), score drift and live quality of the latest version."""
        return ext.monitor(name).snapshot()

    @get(
        "/v1/models/{name:str}/versions/{version:str}/monitoring",
        tags=["monitoring"],
        summary="Drift and quality of a version",
    )
    async def monitoring_version(name: FromPath[str], version: FromPath[str]) -> dict[str, Any]:
        """Input drift, score drift and live quality of one version."""
        return ext.monitor(name, path_version(name, version)).snapshot()

    @post(
        "/v1/models/{name:str}/feedback",
        tags=["monitoring"],
        summary="Label a served row",
        status_code=200,
        operation_class=feedback_op,
    )
    async def feedback_latest(
        request: Request[Any, Any, Any], name: FromPath[str]
    ) -> FeedbackResponse:
        """The true label of a served row, for live precision, recall, F1 and calibration."""
        return _give(ext.monitors_newest_first(name), await _parse(request))

    @post(
        "/v1/models/{name:str}/versions/{version:str}/feedback",
        tags=["monitoring"],
        summary="Label a row served by a version",
        status_code=200,
        operation_class=feedback_op,
    )
    async def feedback_version(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> FeedbackResponse:
        """The true label of a row served by one version."""
        monitor = ext.monitor(name, path_version(name, version))
        return _give([monitor], await _parse(request))

    return [monitoring_latest, monitoring_version, feedback_latest, feedback_version]
