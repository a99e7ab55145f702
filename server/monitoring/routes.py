"""HTTP routes of monitoring: the drift/quality snapshot and label feedback.

- ``GET /v1/models/{name}/monitoring`` (latest version) and
  ``GET /v1/models/{name}/versions/{version}/monitoring``: the snapshot documented in
  :mod:`server.monitoring`.
- ``POST /v1/models/{name}/feedback`` with ``{"request_id": str, "row": int, "label": ...}`` or
  ``{"row_hash": str, "label": ...}``: the label of a served row: one of the model's classes as
  the user's own value (an int or a string; binary and multiclass), or the target (a number;
  regression). Without a version in the path,
  the served versions are searched newest first (a request answered before a new version
  loaded still finds its row). ``POST /v1/models/{name}/versions/{version}/feedback`` looks in
  that version only. An unknown or forgotten row answers 404 (``unknown-feedback-id``), a bad
  body or a label that is not a class (or not a number, for a regressor) answers 400
  (``invalid-input``), naming the label.

With ``--workers N``, a label whose row the answering worker did not serve is forwarded to the
other workers (``server.monitoring.shared``): :class:`PeerFeedback` one way, :class:`PeerAnswer`
back; the worker that served the row records it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from server.errors import InvalidInput, TabserveError, UnknownFeedbackId
from server.monitoring.extension import Labelled
from server.monitoring.monitor import ModelMonitor
from server.openapi_docs import FEEDBACK_BODY, with_json_body
from server.request_meta import check_json_media_type, path_version

if TYPE_CHECKING:
    from server.monitoring.extension import MonitoringExtension


class FeedbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A true label for one served row, named by request id and row index, or by row hash."""

    label: int | float | str
    """A class label (binary, multiclass) or the target value (regression)."""
    request_id: str | None = None
    row: int = 0
    """Row index within the request (0 for single-row requests)."""
    row_hash: str | None = None
    """blake2b (16-byte digest, hex) of the row's little-endian float32 bytes."""


class FeedbackResponse(msgspec.Struct, omit_defaults=True):
    model: str
    version: int
    matched_by: str
    """"request_id" or "row_hash"."""
    label: int | float | str
    """The label as the model knows it (one of its classes, or the target)."""
    predicted: int | float | str
    """What the server answered for that row: the predicted class (binary at the threshold,
    multiclass the argmax), or the predicted value (regression)."""
    replaced: bool
    """True when this label replaced an earlier one for the same row."""
    score: float | None = None
    """Binary only: the positive-class score the server answered for that row."""
    predicted_positive: bool | None = None
    """Binary only: whether that score was at or above the threshold."""


class PeerFeedback(msgspec.Struct, forbid_unknown_fields=True):
    """A label forwarded to another worker: look for its row there (in ``version``, or in every
    served version newest first when None)."""

    model: str
    version: int | None
    feedback: FeedbackRequest


class PeerAnswer(msgspec.Struct, omit_defaults=True):
    """Another worker's answer to a :class:`PeerFeedback`: one of the three is set."""

    found: FeedbackResponse | None = None
    unknown: str | None = None
    """The row is not there (or the model, the version, or its monitor)."""
    invalid: str | None = None
    """The label is not one the model takes."""


_decode_feedback = msgspec.json.Decoder(FeedbackRequest).decode
_decode_peer_feedback = msgspec.json.Decoder(PeerFeedback).decode
_decode_peer_answer = msgspec.json.Decoder(PeerAnswer).decode
_encode = msgspec.json.Encoder().encode


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


def _give(
    ext: MonitoringExtension,
    monitors: list[ModelMonitor],
    body: FeedbackRequest,
    *,
    forwarded: bool = False,
    answered_only: bool = False,
) -> FeedbackResponse:
    last: UnknownFeedbackId | None = None
    for monitor in monitors:
        try:
            result = monitor.feedback(
                label=body.label,
                request_id=body.request_id,
                row=body.row,
                row_hash=body.row_hash,
                forwarded=forwarded,
                answered_only=answered_only,
            )
        except UnknownFeedbackId as exc:
            last = exc
            continue
        ext.labelled(
            Labelled(monitor, body.request_id, body.row, body.row_hash, body.label, result)
        )
        return FeedbackResponse(
            model=monitor.card.name,
            version=monitor.card.version,
            matched_by=result.matched_by,
            label=result.label,
            predicted=result.predicted,
            replaced=result.replaced,
            score=result.score,
            predicted_positive=result.predicted_positive,
        )
    raise last if last is not None else UnknownFeedbackId("no served version has a monitor")


async def _give_anywhere(
    ext: MonitoringExtension,
    monitors: list[ModelMonitor],
    body: FeedbackRequest,
    name: str,
    version: int | None,
) -> FeedbackResponse:
    """:func:`_give` in this worker, else in the other workers (when there are others).
    Without a version, only the version that answered the row takes its label (not one that
    scored it in shadow)."""
    try:
        return _give(ext, monitors, body, answered_only=version is None)
    except UnknownFeedbackId:
        if ext.share is None:
            raise
        message = _encode(PeerFeedback(model=name, version=version, feedback=body))
        for raw in await ext.share.ask_peers(message, found=_is_found):
            answer = _peer_answer(raw)
            if answer is None:
                continue
            if answer.found is not None:
                return answer.found
            if answer.invalid is not None:
                raise InvalidInput(answer.invalid) from None
        raise


def _peer_answer(raw: bytes) -> PeerAnswer | None:
    try:
        return _decode_peer_answer(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _is_found(raw: bytes) -> bool:
    answer = _peer_answer(raw)
    return answer is not None and answer.found is not None


def peer_answerer(ext: MonitoringExtension) -> Callable[[bytes], bytes]:
    """This worker's answer to another worker's :class:`PeerFeedback` (look here only)."""

    def answer(message: bytes) -> bytes:
        try:
            asked = _decode_peer_feedback(message)
            if asked.version is None:
                monitors = ext.monitors_newest_first(asked.model)
            else:
                monitors = [ext.monitor(asked.model, asked.version)]
            found = _give(
                ext,
                monitors,
                asked.feedback,
                forwarded=True,
                answered_only=asked.version is None,
            )
            reply = PeerAnswer(found=found)
        except (msgspec.ValidationError, msgspec.DecodeError, InvalidInput) as exc:
            reply = PeerAnswer(invalid=str(exc))
        except TabserveError as exc:  # unknown row, model, version; no monitor
            reply = PeerAnswer(unknown=str(exc))
        return _encode(reply)

    return answer


def handlers(ext: MonitoringExtension) -> list[HTTPRouteHandler]:
    # The body is read by _parse, not by Litestar: its schema goes into the OpenAPI document here.
    feedback_op = with_json_body(FEEDBACK_BODY, "The true label of one served row.")

    @get("/v1/models/{name:str}/monitoring", tags=["monitoring"], summary="Drift and quality")
    async def monitoring_latest(name: FromPath[str]) -> dict[str, Any]:
        """Input drift (PSI, KS per feature), score drift and live quality of the latest version."""
        return ext.snapshot(ext.monitor(name))

    @get(
        "/v1/models/{name:str}/versions/{version:str}/monitoring",
        tags=["monitoring"],
        summary="Drift and quality of a version",
    )
    async def monitoring_version(name: FromPath[str], version: FromPath[str]) -> dict[str, Any]:
        """Input drift, score drift and live quality of one version."""
        return ext.snapshot(ext.monitor(name, path_version(name, version)))

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
        """The true label of a served row, for live quality (binary: precision, recall, F1 and
        calibration; multiclass: accuracy and macro-F1; regression: MAE and RMSE)."""
        body = await _parse(request)
        return await _give_anywhere(ext, ext.monitors_newest_first(name), body, name, None)

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
        number = path_version(name, version)
        monitor = ext.monitor(name, number)
        body = await _parse(request)
        return await _give_anywhere(ext, [monitor], body, name, number)

    return [monitoring_latest, monitoring_version, feedback_latest, feedback_version]
