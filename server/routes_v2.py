"""``/v2``: the Open Inference Protocol (KServe V2) REST endpoints.

Server metadata, health (server live/ready), model metadata, model ready, and infer, with and
without ``/versions/{version}``. Readiness is in the status code (200 ready, 503 not), with
``{"live": ...}`` / ``{"ready": ...}`` bodies as KServe's own server sends. Infer takes plain JSON
or binary tensor data (``server.oip.rest``), held to the model's metadata (``server.oip.schema``:
one FP32 matrix, or one input per column for typed models; outputs per task).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from server.core import Core, JSONBytes, Route
from server.oip import rest
from server.oip.schema import (
    EXTENSIONS,
    PLATFORM,
    SERVER_NAME,
    model_inputs,
    model_outputs,
    server_version,
)
from server.oip.v2json import InferResponse
from server.openapi_docs import INFER_BODY, with_json_body
from server.registry import LoadedModel
from server.request_meta import path_version


class TensorMetadata(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(msgspec.Struct):
    name: str
    ready: bool


class ServerMetadata(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class ServerLive(msgspec.Struct):
    live: bool


class ServerReady(msgspec.Struct):
    ready: bool


def _metadata(m: LoadedModel, versions: list[int]) -> ModelMetadata:
    card = m.card
    return ModelMetadata(
        name=card.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[TensorMetadata(*t) for t in model_inputs(card)],
        outputs=[TensorMetadata(*t) for t in model_outputs(card)],
    )


V2 = Route(
    2,
    rest.decode_json,
    rest.encode,
    decode_large=rest.decode_json_large,
    decode_binary=rest.decode_binary,
)


def handlers(core: Core) -> list[HTTPRouteHandler]:
    infer_op = with_json_body(
        INFER_BODY,
        "One FP32 tensor [rows, n_features] (every column numeric), or one input per column "
        "(BYTES strings, BOOL, numbers) as the model's metadata states.",
    )
    ok = {
        200: ResponseSpec(
            InferResponse,
            description="Classifiers: probabilities FP32 [n, k], label [n] (INT64, or BYTES for "
            "string classes); regressors: value FP32 [n].",
        )
    }

    server_meta = ServerMetadata(SERVER_NAME, server_version(), list(EXTENSIONS))

    @get("/v2", tags=["v2"], summary="Server metadata")
    async def server_metadata() -> ServerMetadata:
        return server_meta

    @get("/v2/health/live", tags=["v2"], summary="Server live")
    async def server_live() -> ServerLive:
        return ServerLive(live=True)

    @get("/v2/health/ready", tags=["v2"], summary="Server ready")
    async def server_ready() -> Response[ServerReady]:
        ready = core.registry.ready
        return Response(ServerReady(ready=ready), status_code=200 if ready else 503)

    def _all_versions(name: str) -> list[int]:
        return sorted(core.registry.snapshot.versions.get(name, {}))

    @get("/v2/models/{name:str}", tags=["v2"], summary="Model metadata")
    async def model_metadata(name: FromPath[str]) -> ModelMetadata:
        return _metadata(core.registry.get(name), _all_versions(name))

    @get("/v2/models/{name:str}/versions/{version:str}", tags=["v2"], summary="Model metadata")
    async def model_version_metadata(name: FromPath[str], version: FromPath[str]) -> ModelMetadata:
        number = path_version(name, version)
        return _metadata(core.registry.get(name, number), [number])

    @get("/v2/models/{name:str}/ready", tags=["v2"], summary="Model ready")
    async def model_ready(name: FromPath[str]) -> Response[ModelReady]:
        m = core.registry.get(name)
        ready = m.batcher.accepting
        return Response(ModelReady(name=name, ready=ready), status_code=200 if ready else 503)

    @get("/v2/models/{name:str}/versions/{version:str}/ready", tags=["v2"], summary="Model ready")
    async def model_version_ready(
        name: FromPath[str], version: FromPath[str]
    ) -> Response[ModelReady]:
        m = core.registry.get(name, path_version(name, version))
        ready = m.batcher.accepting
        return Response(ModelReady(name=name, ready=ready), status_code=200 if ready else 503)

    @post(
        "/v2/models/{name:str}/infer",
        operation_class=infer_op,
        responses=ok,
        tags=["v2"],
        summary="Infer (latest version)",
        status_code=200,
    )
    async def infer_latest(request: Request[Any, Any, Any], name: FromPath[str]) -> JSONBytes:
        return await core.predict(request.scope, request.receive, name, None, V2)

    @post(
        "/v2/models/{name:str}/versions/{version:str}/infer",
        operation_class=infer_op,
        responses=ok,
        tags=["v2"],
        summary="Infer (given version)",
        status_code=200,
    )
    async def infer_version(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> JSONBytes:
        number = path_version(name, version)
        return await core.predict(request.scope, request.receive, name, number, V2)

    return [
        server_metadata,
        server_live,
        server_ready,
        model_metadata,
        model_version_metadata,
        model_ready,
        model_version_ready,
        infer_latest,
        infer_version,
    ]
