"""``inference.GRPCInferenceService``: the protocol's methods, served by the app's own HTTP/2
front (``server.oip.grpc_connection``) on its event loop.

The service reads the same :class:`server.core.Core` as the HTTP routes: the registry (so a
reload swaps versions for both), each version's batcher (one queue, one cache, one monitor for
gRPC and HTTP requests alike) and the server metrics (requests and latency per model, counted
under the HTTP status their outcome maps to). A ModelInfer call:

    check inputs and outputs against the model's metadata (server.oip.schema)
    raw_input_contents, or the typed contents, as the row matrix (one FP32 matrix; or one
        input per column through server.oip.typed: bytes_contents for BYTES, bool_contents,
        fp32/fp64/int/int64/uint/uint64_contents as the input's datatype says)
    Batcher.predict(rows, deadline) ─▶ probabilities and labels (a regressor: values)
    raw_output_contents when the request was raw, else typed contents (a string label in
        bytes_contents, UTF-8)

A method gets the request message and the call's :class:`~server.oip.grpc_connection.Call`
(metadata and deadline) and returns the response message, or raises
:class:`~server.oip.grpc_errors.Abort` with the call's status. The client's deadline
(``grpc-timeout``) is the request's deadline; without one the server's
default applies. Metadata ``x-request-id`` (1-128 visible ASCII characters) names the request in
logs and monitoring, else the request's ``id``, else a new id; ``cache-control: no-cache`` /
``no-store`` work as on HTTP. Errors are statuses (``server.oip.grpc_errors``).
"""

from __future__ import annotations

import time
from typing import Any, NoReturn

import numpy as np

from server.batcher import CacheMode
from server.core import Core
from server.errors import InvalidInput, ModelNotFound, ModelNotReady
from server.modelcard import ModelCard
from server.oip import grpc_predict_v2_pb2 as pb
from server.oip.grpc_call import Call, Method
from server.oip.grpc_errors import Abort, grpc_error
from server.oip.schema import (
    EXTENSIONS,
    INPUT_DATATYPE,
    PLATFORM,
    SERVER_NAME,
    Tensor,
    by_column,
    check_inputs,
    check_outputs,
    check_values,
    model_inputs,
    model_outputs,
    outputs,
    server_version,
)
from server.oip.tensors import from_raw, to_raw
from server.oip.typed import Values, column_steps, rows_now, texts
from server.registry import LoadedModel
from server.request_meta import (
    canonical_version,
    milliseconds,
    new_request_id,
    valid_request_id,
)

_TYPED_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed-contents field of each datatype (FP16 has none: raw only)."""
_InferOutput = pb.ModelInferResponse.InferOutputTensor
_TensorMetadata = pb.ModelMetadataResponse.TensorMetadata


SERVICE = "/inference.GRPCInferenceService/"


class InferenceService:
    """The protocol's methods over one :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._metadata = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS)
        )
        self._live = pb.ServerLiveResponse(live=True)

    def methods(self) -> dict[bytes, Method]:
        """The served methods by path (``/inference.GRPCInferenceService/ModelInfer``, ...)."""
        served: dict[str, tuple[Any, Any, bool]] = {
            "ServerLive": (pb.ServerLiveRequest, self.ServerLive, False),
            "ServerReady": (pb.ServerReadyRequest, self.ServerReady, False),
            "ServerMetadata": (pb.ServerMetadataRequest, self.ServerMetadata, False),
            "ModelReady": (pb.ModelReadyRequest, self.ModelReady, False),
            "ModelMetadata": (pb.ModelMetadataRequest, self.ModelMetadata, False),
            "ModelInfer": (pb.ModelInferRequest, self.ModelInfer, True),
        }
        return {
            (SERVICE + name).encode(): Method(message.FromString, handler, waits)
            for name, (message, handler, waits) in served.items()
        }

    # --- health and metadata -------------------------------------------------------------------

    def ServerLive(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        return self._live

    def ServerReady(self, request: pb.ServerReadyRequest, call: Call) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.registry.ready)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        return self._metadata

    def ModelReady(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        try:
            model = self._model(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)  # as Triton answers: not ready, no error
        return pb.ModelReadyResponse(ready=model.batcher.accepting and self.core.registry.ready)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        try:
            model = self._model(request.name, request.version)
        except Exception as exc:
            self._abort(exc, new_request_id())
        card = model.card
        if request.version:
            versions = [str(card.version)]
        else:
            versions = [str(v) for v in sorted(self.core.registry.snapshot.versions[card.name])]
        return pb.ModelMetadataResponse(
            name=card.name,
            versions=versions,
            platform=PLATFORM,
            inputs=[
                _TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in model_inputs(card)
            ],
            outputs=[
                _TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in model_outputs(card)
            ],
        )

    # --- infer ---------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        core = self.core
        started = time.perf_counter()
        label = "unknown"  # never a client-chosen string as a metrics label
        request_id, cache_mode = _call_metadata(call, request.id)
        try:
            model = self._model(request.model_name, request.model_version)
            card = model.card
            label = card.name
            core.count(label, card.version)
            now = time.monotonic()
            deadline = call.deadline
            if deadline is None:
                deadline = now + core.settings.default_deadline_ms / 1000.0
            ladder = model.ladder
            if ladder is not None:  # degrade on: the budget is the deadline too
                budget_ms = _budget_ms(call)
                if budget_ms is None:
                    budget_ms = ladder.objective_ms
                deadline = min(deadline, now + budget_ms / 1000.0)
            batcher = model.batcher
            # Refuse before decoding when the queue has no room (degrade: not even the cheapest
            # variant's).
            (batcher if ladder is None else ladder.rungs[-1].batcher).admit(deadline)
            raw = len(request.raw_input_contents) > 0
            rows = _rows(request, model, core.settings.max_request_rows, raw)
            wanted = check_outputs(card, [o.name for o in request.outputs])
            header = model.variant_header
            if ladder is None:
                scores = await batcher.predict(
                    rows, deadline=deadline, request_id=request_id, cache_mode=cache_mode
                )
            else:
                rung = ladder.pick(len(rows), deadline, time.monotonic())
                rung, scores = await ladder.predict(rung, rows, deadline, request_id, cache_mode)
                card, header = rung.card, rung.header
            response = _response(card, request, request_id, scores, wanted, raw)
            if header is not None:
                response.parameters["variant"].string_param = header.decode()
        except Exception as exc:
            self._abort(exc, request_id, label, started)
        core.record(label, 200, started)
        return response

    # --- helpers -------------------------------------------------------------------------------

    def _model(self, name: str, version: str) -> LoadedModel:
        if not version:
            return self.core.registry.get(name)
        number = canonical_version(version)
        if number is None:
            raise ModelNotFound(
                f"model {name} has no version {version!r}: a version is a plain decimal integer"
            )
        return self.core.registry.get(name, number)

    def _abort(
        self,
        exc: Exception,
        request_id: str,
        label: str | None = None,
        started: float = 0.0,
    ) -> NoReturn:
        registry = self.core.registry
        if isinstance(exc, ModelNotFound) and not registry.snapshot.latest and not registry.closing:
            exc = ModelNotReady("the server is loading its models; retry shortly")
        error = grpc_error(exc, request_id)
        if label is not None:
            self.core.record(label, error.http_status, started)
        raise Abort(error) from None


def _call_metadata(call: Call, given_id: str) -> tuple[str, CacheMode]:
    request_id: str | None = None
    cache_mode: CacheMode = "default"
    for key, value in call.metadata:
        if key == "x-request-id":
            request_id = valid_request_id(value.encode("latin-1")) or request_id
        elif key == "cache-control":
            directives = value.lower()
            if "no-store" in directives:
                cache_mode = "no-store"
            elif "no-cache" in directives and cache_mode == "default":
                cache_mode = "no-cache"
    if request_id is None and given_id:
        request_id = valid_request_id(given_id.encode())
    return request_id or new_request_id(), cache_mode


def _budget_ms(call: Call) -> float | None:
    """The ``x-latency-budget-ms`` metadata (as the REST header X-Latency-Budget-Ms)."""
    for key, value in call.metadata:
        if key == "x-latency-budget-ms":
            return milliseconds("x-latency-budget-ms", value)
    return None


def _rows(
    request: pb.ModelInferRequest, model: LoadedModel, max_rows: int, raw: bool
) -> np.ndarray:
    """The request's rows, float32 [n, n_features], once its inputs fit the model's metadata."""
    card = model.card
    inputs = request.inputs
    specs = [Tensor(t.name, t.datatype, list(t.shape)) for t in inputs]
    if raw:
        contents = request.raw_input_contents
        if len(contents) != len(inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(contents)} entries for {len(inputs)} inputs "
                "(one per input, in the order of `inputs`)"
            )
        if any(t.HasField("contents") for t in inputs):
            raise InvalidInput(
                "an input carries `contents` while the request carries raw_input_contents; "
                "use one or the other"
            )
    if by_column(card, specs):
        return _column_rows(request, specs, model, max_rows, raw)
    index = check_inputs(card, specs, max_rows)
    tensor = inputs[index]
    shape = specs[index].shape
    if raw:
        rows = from_raw(request.raw_input_contents[index], INPUT_DATATYPE, shape, tensor.name)
    else:
        typed = tensor.contents
        others = [f for f in _TYPED_FIELDS if f != "fp32_contents" and len(getattr(typed, f))]
        if others:
            raise InvalidInput(
                f"input {tensor.name!r} is {INPUT_DATATYPE}: its values go in fp32_contents, "
                f"not {others[0]}"
            )
        values = typed.fp32_contents
        if len(values) != shape[0] * shape[1]:
            raise InvalidInput(
                f"input {tensor.name!r} has {len(values)} values in fp32_contents for shape {shape}"
            )
        rows = np.asarray(values, dtype=np.float32).reshape(shape)
    return check_values(rows, card)


def _column_rows(
    request: pb.ModelInferRequest,
    specs: list[Tensor],
    model: LoadedModel,
    max_rows: int,
    raw: bool,
) -> np.ndarray:
    """One input per column (``server.oip.typed``): raw, or in its datatype's typed contents."""
    inputs = request.inputs

    def load(i: int) -> Values:
        tensor, spec = inputs[i], specs[i]
        if raw:
            array = from_raw(request.raw_input_contents[i], spec.datatype, spec.shape, spec.name)
            return texts(array.reshape(-1), spec.name) if spec.datatype == "BYTES" else array
        field = _FIELD.get(spec.datatype)
        typed = tensor.contents
        others = [f for f in _TYPED_FIELDS if f != field and len(getattr(typed, f))]
        if field is None or others:
            where = f"in {field}" if field else "raw (raw_input_contents)"
            got = f", not {others[0]}" if others else ""
            raise InvalidInput(
                f"input `{spec.name}` is {spec.datatype}: its values go {where}{got}"
            )
        values = getattr(typed, field)
        return texts(values, spec.name) if field == "bytes_contents" else list(values)

    return rows_now(column_steps(model.card, specs, load, max_rows))


def _response(
    card: ModelCard,
    request: pb.ModelInferRequest,
    request_id: str,
    scores: np.ndarray,
    wanted: tuple[str, ...],
    raw: bool,
) -> pb.ModelInferResponse:
    tensors = outputs(card, scores, wanted)
    response_id = request.id or request_id
    if raw:
        return pb.ModelInferResponse(
            model_name=card.name,
            model_version=str(card.version),
            id=response_id,
            outputs=[
                _InferOutput(name=t.name, datatype=t.datatype, shape=t.shape) for t in tensors
            ],
            raw_output_contents=[to_raw(t.array, t.datatype) for t in tensors],
        )
    out = []
    for t in tensors:
        field = _FIELD[t.datatype]
        values = t.array.ravel().tolist()
        if field == "bytes_contents":
            values = [str(v).encode() for v in values]
        contents = pb.InferTensorContents(**{field: values})
        out.append(_InferOutput(name=t.name, datatype=t.datatype, shape=t.shape, contents=contents))
    return pb.ModelInferResponse(
        model_name=card.name, model_version=str(card.version), id=response_id, outputs=out
    )
