"""``/v1``: predict (latest or a given version), list models, describe a model."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import msgspec
import numpy as np
from litestar import Request, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from server.core import Core, JSONBytes, Route
from server.ladder import CascadeRunner
from server.large_bodies import decode_predict_large
from server.modelcard import Cascade, Column, Cost, Label, Metrics, ModelCard, Task
from server.openapi_docs import PREDICT_BODY, with_json_body
from server.payload import (
    PredictResponse,
    RegressionResponse,
    decode_predict,
    encode,
    encode_predict,
)
from server.registry import LoadedModel
from server.request_meta import path_version
from server.routing import Routing, RoutingEvent, read_events

_MARK = "\x00tabserve-request-id\x00"
"""Stands in for the request id while a remembered response is encoded ahead (a model's name
cannot hold a NUL, so its JSON form appears once, where the id goes)."""
_MARK_JSON = encode(_MARK)


class ResponseAround(NamedTuple):
    """A /v1 response encoded ahead, but for its request id: ``prefix + id (JSON) + suffix``."""

    prefix: bytes
    suffix: bytes

    @classmethod
    def of(cls, encoded: bytes) -> ResponseAround | None:
        """Split at the mark; None unless it appears exactly once (then encode per request)."""
        if encoded.count(_MARK_JSON) != 1:
            return None
        prefix, _, suffix = encoded.partition(_MARK_JSON)
        return cls(prefix, suffix)


def decode_v1(
    body: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, ResponseAround | None]:
    return decode_predict(body, card, max_rows), None


async def decode_v1_large(
    body: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, ResponseAround | None]:
    return await decode_predict_large(body, card, max_rows), None


def encode_v1(
    card: ModelCard, request_id: str, ahead: ResponseAround | None, scores: np.ndarray
) -> bytes:
    if ahead is not None:  # the response memo's: everything but the request id is encoded
        return ahead.prefix + encode(request_id) + ahead.suffix
    return encode_predict(card, request_id, scores)


def _keep(card: ModelCard, _: ResponseAround | None, scores: np.ndarray) -> ResponseAround | None:
    return ResponseAround.of(encode_predict(card, _MARK, scores))


V1 = Route(1, decode_v1, encode_v1, _keep, decode_v1_large)


class ModelSummary(msgspec.Struct):
    name: str
    latest: int
    """The version that answers requests naming none (the routing's primary, else the newest)."""
    versions: list[int]
    shadow: int | None = None
    """The version scoring a copy of the traffic (never answering), if any."""


class FeatureSchema(msgspec.Struct):
    input_name: str
    """The ONNX input of a ``matrix`` layout (a ``columns`` layout has one per column)."""
    feature_names: list[str]
    n_features: int
    dtype: str
    """The row matrix's type inside the server; each column's own values are in ``columns``."""
    allow_missing: bool
    """Every column takes null (missing); per column in ``columns``."""
    layout: str
    """``matrix`` (one float32 ONNX input) or ``columns`` (one ONNX input per column)."""
    columns: list[Column]
    """Each column: ``kind`` (numeric, boolean, categorical), its ``categories``,
    ``allow_missing``, what an unknown category gets (``unknown``: refuse or serve) and the
    ``dtype`` its ONNX input takes."""


class ServingCost(msgspec.Struct):
    measured_us_batch1: float
    """Batch-1 cost measured at warm-up on this server."""
    mode: str
    """'inline' (on the event loop) or 'thread' (the model's own worker thread)."""
    export: Cost
    """What the exporter measured."""


class RungDetail(msgspec.Struct):
    name: str
    trees: int
    metrics: Metrics
    cost: Cost
    serving: bool
    """Has its own batcher now (the model degrades) or scores every row (its cascade)."""
    queued_rows: int = 0
    batches: int = 0


class VersionDetail(msgspec.Struct):
    version: FromPath[int]
    created_at: str
    framework: str
    estimator: str
    onnx_sha256: str
    task: Task
    classes: list[Label]
    """The user's labels in the order of the scores; empty for a regressor."""
    positive_class: Label | None
    """Binary: the class the threshold applies to; null otherwise."""
    threshold: float | None
    """Binary: the decision threshold on the positive class's score; null otherwise."""
    metrics: Metrics
    cost: ServingCost
    schema: FeatureSchema
    queued_rows: int
    batches: int
    largest_batch_rows: int
    cache: dict[str, Any]
    """Response cache of this version: ``enabled``, then whatever the cache describes (tiers,
    TTL, hit ratio, whether Redis is skipped)."""
    ladder: list[RungDetail] = []
    """The cheaper variants exported with the version (``variants`` in its card), each with
    whether it serves now (degrade or cascade on) and its queue."""
    degrade_objective_ms: float | None = None
    """Degrade on: the latency objective of requests without X-Latency-Budget-Ms."""
    cascade: Cascade | None = None
    """Cascade on: its variant, band, hold-out metrics and escalated share."""


def _cache_state(cache: object) -> dict[str, Any]:
    if cache is None:
        return {"enabled": False}
    describe = getattr(cache, "describe", None)
    return {"enabled": True, **(describe() if callable(describe) else {})}


class ModelDetail(msgspec.Struct):
    name: str
    latest: int
    versions: list[int]
    description: str
    task: Task
    classes: list[Label]
    schema: FeatureSchema
    threshold: float | None
    metrics: Metrics
    """Hold-out metrics of the latest version, for its task (``metrics.task``)."""
    cost: ServingCost
    detail: list[VersionDetail]
    """Every loaded version, oldest first."""
    shadow: int | None = None
    """The version scoring a copy of the primary's traffic (``GET .../shadow`` compares them)."""
    previous: list[int] = []
    """Earlier primaries, oldest first (``POST /admin/models/{name}/rollback`` returns to the
    last)."""
    routing_events: list[RoutingEvent] = []
    """The latest routing changes (shadow, promote, rollback, pin), oldest first: when, who
    (admin, auto, retrain), why."""


def _version_detail(m: LoadedModel) -> VersionDetail:
    card = m.card
    return VersionDetail(
        version=card.version,
        created_at=card.created_at,
        framework=card.framework,
        estimator=card.estimator,
        onnx_sha256=card.onnx.sha256,
        task=card.task,
        classes=card.classes,
        positive_class=card.positive_class,
        threshold=card.threshold if card.task == "binary" else None,
        metrics=card.metrics,
        cost=ServingCost(
            measured_us_batch1=round(m.runner.cost_us, 2),
            mode="inline" if m.runner.inline else "thread",
            export=card.cost,
        ),
        schema=FeatureSchema(
            input_name=card.input.name,
            feature_names=card.input.feature_names,
            n_features=card.input.n_features,
            dtype="float32",
            allow_missing=card.input.allow_missing,
            layout=card.input.layout,
            columns=card.input.columns,
        ),
        queued_rows=m.batcher.queued_rows,
        batches=m.batcher.stats.batches,
        largest_batch_rows=m.batcher.stats.largest_batch_rows,
        cache=_cache_state(m.batcher.cache),
        ladder=_rungs(m),
        degrade_objective_ms=m.ladder.objective_ms if m.ladder is not None else None,
        cascade=card.cascade if isinstance(m.runner, CascadeRunner) else None,
    )


def _rungs(m: LoadedModel) -> list[RungDetail]:
    batchers = {r.name: r.batcher for r in m.ladder.variants} if m.ladder is not None else {}
    cascade = (
        m.card.cascade.variant if isinstance(m.runner, CascadeRunner) and m.card.cascade else None
    )
    out = []
    for v in m.card.variants:
        b = batchers.get(v.name)
        out.append(
            RungDetail(
                name=v.name,
                trees=v.trees,
                metrics=v.metrics,
                cost=v.cost,
                serving=b is not None or v.name == cascade,
                queued_rows=b.queued_rows if b is not None else 0,
                batches=b.stats.batches if b is not None else 0,
            )
        )
    return out


def handlers(core: Core) -> list[HTTPRouteHandler]:
    predict_op = with_json_body(PREDICT_BODY, "Rows to score.")
    ok = {
        200: ResponseSpec(
            PredictResponse | RegressionResponse,  # type: ignore[arg-type]
            description="One prediction per row, in order: a classifier's label and scores "
            "(with the classes), or a regressor's value.",
        )
    }

    @post(
        "/v1/models/{name:str}/predict",
        operation_class=predict_op,
        responses=ok,
        tags=["v1"],
        summary="Predict with the latest version",
        status_code=200,
    )
    async def predict_latest(request: Request[Any, Any, Any], name: FromPath[str]) -> JSONBytes:
        """Score rows with the model's highest version. Headers: X-Request-ID (echoed),
        X-Deadline-Ms (overrides the default deadline; 504 when it passes before the rows run)."""
        return await core.predict(request.scope, request.receive, name, None, V1)

    @post(
        "/v1/models/{name:str}/versions/{version:str}/predict",
        operation_class=predict_op,
        responses=ok,
        tags=["v1"],
        summary="Predict with a given version",
        status_code=200,
    )
    async def predict_version(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> JSONBytes:
        """Score rows with one version of the model. The version is a plain decimal integer
        (``1``, not ``+1``, ``01`` or ``0_1``); any other spelling is 404."""
        number = path_version(name, version)
        return await core.predict(request.scope, request.receive, name, number, V1)

    @get("/v1/models", tags=["v1"], summary="List models")
    async def list_models() -> list[ModelSummary]:
        snapshot = core.registry.snapshot
        return [
            ModelSummary(
                name=name,
                latest=snapshot.latest[name].version,
                versions=sorted(by_version),
                shadow=snapshot.shadows[name].version if name in snapshot.shadows else None,
            )
            for name, by_version in snapshot.versions.items()
        ]

    @get("/v1/models/{name:str}", tags=["v1"], summary="Describe a model")
    async def describe_model(name: FromPath[str]) -> ModelDetail:
        """Versions, latest, task, classes, typed input columns, hold-out metrics (per task),
        threshold (binary) and measured cost."""
        latest = core.registry.get(name)
        snapshot = core.registry.snapshot
        by_version = snapshot.versions.get(name, {latest.version: latest})
        details = [_version_detail(m) for _, m in sorted(by_version.items())]
        top = next(d for d in details if d.version == latest.version)
        shadow = snapshot.shadows.get(name)
        events = await asyncio.to_thread(read_events, core.settings.models_dir, name, 10)
        return ModelDetail(
            name=name,
            latest=latest.version,
            versions=sorted(by_version),
            description=latest.card.description,
            task=top.task,
            classes=top.classes,
            schema=top.schema,
            threshold=top.threshold,
            metrics=top.metrics,
            cost=top.cost,
            detail=details,
            shadow=shadow.version if shadow is not None else None,
            previous=list(snapshot.routing.get(name, Routing()).previous),
            routing_events=events,
        )

    return [predict_latest, predict_version, list_models, describe_model]
