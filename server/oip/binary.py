"""The REST binary tensor extension of the Open Inference Protocol (``binary_tensor_data``).

A request with the header ``Inference-Header-Content-Length: N`` is N bytes of JSON (the infer
request, as on plain JSON) followed by the binary data of the inputs whose ``parameters`` hold
``binary_data_size``, in the order of ``inputs``, each in the raw layout of
``server.oip.tensors`` (such an input has no ``data``). An output is answered in binary when its
requested ``parameters`` say ``"binary_data": true``, or when the request's ``parameters`` say
``"binary_data_output": true`` and the output's do not say false; the answer is then N bytes of
JSON (those outputs carry ``parameters.binary_data_size`` instead of ``data``) followed by their
data, with ``Inference-Header-Content-Length: N``. This is what ``tritonclient.http`` sends and
reads with its defaults.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
import numpy as np

from server.errors import InvalidInput
from server.modelcard import ModelCard
from server.oip.schema import (
    INPUT_DATATYPE,
    Tensor,
    by_column,
    check_inputs,
    check_outputs,
    check_values,
    output_names,
    outputs,
)
from server.oip.tensors import from_raw, to_raw
from server.oip.typed import Values, column_steps, json_values, rows_now, texts
from server.oip.v2json import Parameters, RequestedOutput, decode_infer

HEADER = b"inference-header-content-length"
"""The request and response header naming the JSON part's length (ASGI header names are
lower case)."""
OCTET_STREAM = "application/octet-stream"


class InferSpec(NamedTuple):
    """What the answer to an infer request needs from it besides the scores."""

    id: str | None
    outputs: tuple[str, ...]
    """The outputs to answer, in order (all of the model's when none were requested)."""
    binary: tuple[bool, ...]
    """Per output: answered as binary data."""


def infer_spec(
    card: ModelCard,
    request_id: str | None,
    parameters: Parameters | None,
    requested: list[RequestedOutput] | None,
) -> InferSpec:
    """The outputs a request asks for (each one the model gives) and which are binary."""
    default = _flag(parameters, "binary_data_output", "the request") is True
    if not requested:
        names = output_names(card)
        return InferSpec(request_id, names, (default,) * len(names))
    names = check_outputs(card, [out.name for out in requested])
    binary = []
    for out in requested:
        own = _flag(out.parameters, "binary_data", f"output {out.name!r}")
        binary.append(default if own is None else own)
    return InferSpec(request_id, names, tuple(binary))


def _flag(parameters: Parameters | None, key: str, where: str) -> bool | None:
    if not parameters or key not in parameters:
        return None
    value = parameters[key]
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} of {where} must be true or false, got {value!r}")
    return value


def header_length(value: bytes, body_length: int) -> int:
    """The value of ``Inference-Header-Content-Length``: the JSON part's length in the body."""
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput(
            "Inference-Header-Content-Length must be the length in bytes of the JSON part of "
            f"the body, got {value[:40]!r}"
        )
    length = int(text)
    if length > body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length}, but the body has {body_length} bytes"
        )
    return length


# --- requests ------------------------------------------------------------------------------------


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    """Empty when the input has no ``data`` (its values are binary)."""


class _Request(msgspec.Struct):
    inputs: list[_Input]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestedOutput] | None = None


_request_decoder = msgspec.json.Decoder(_Request)


def decode_request(
    body: bytes, json_length: int, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, InferSpec]:
    """A binary infer request's rows, float32 [n, n_features], and its :class:`InferSpec`."""
    head, tail = body[:json_length], memoryview(body)[json_length:]
    try:
        req = _request_decoder.decode(head)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request header (the JSON part of the body): {exc}") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidInput(
            "the first Inference-Header-Content-Length bytes of the body are not a JSON infer "
            f"request: {exc}"
        ) from None
    specs = [Tensor(t.name, t.datatype, t.shape) for t in req.inputs]
    if by_column(card, specs):
        spec = infer_spec(card, req.id, req.parameters, req.outputs)
        return _column_rows(req.inputs, specs, tail, card, max_rows), spec
    index = check_inputs(card, specs, max_rows)
    spec = infer_spec(card, req.id, req.parameters, req.outputs)
    pieces = _binary_pieces(req.inputs, tail)
    tensor = req.inputs[index]
    piece = pieces[index]
    if piece is not None:
        rows = from_raw(bytes(piece), INPUT_DATATYPE, tensor.shape, tensor.name)
        rows = check_values(rows, card)
    elif not tensor.data:
        raise InvalidInput(
            f"input {tensor.name!r} has neither `data` nor parameters.binary_data_size"
        )
    else:  # JSON data in a binary request: the JSON part alone is a plain infer request
        rows, _ = decode_infer(bytes(head), card, max_rows)
    return rows, spec


def _column_rows(
    inputs: list[_Input], specs: list[Tensor], tail: memoryview, card: ModelCard, max_rows: int
) -> np.ndarray:
    """One input per column (``server.oip.typed``), each binary or JSON ``data``."""
    pieces = _binary_pieces(inputs, tail)

    def load(i: int) -> Values:
        tensor, piece = inputs[i], pieces[i]
        if piece is None:
            if not tensor.data:
                raise InvalidInput(
                    f"input `{tensor.name}` has neither `data` nor parameters.binary_data_size"
                )
            return json_values(bytes(tensor.data), tensor.datatype, tensor.name, tensor.shape[0])
        array = from_raw(bytes(piece), tensor.datatype, tensor.shape, tensor.name)
        return texts(array.reshape(-1), tensor.name) if tensor.datatype == "BYTES" else array

    return rows_now(column_steps(card, specs, load, max_rows))


def _binary_pieces(inputs: list[_Input], tail: memoryview) -> list[memoryview | None]:
    """Each input's slice of the binary part (None: its data is JSON); the slices must fill the
    binary part exactly."""
    pieces: list[memoryview | None] = []
    pos = 0
    for tensor in inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            pieces.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(
                f"input {tensor.name!r}: parameters.binary_data_size must be a byte count, got "
                f"{size!r}"
            )
        if tensor.data:
            raise InvalidInput(
                f"input {tensor.name!r} has both `data` and parameters.binary_data_size"
            )
        if pos + size > len(tail):
            raise InvalidInput(
                f"input {tensor.name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(tail) - pos} bytes of binary data left)"
            )
        pieces.append(tail[pos : pos + size])
        pos += size
    if pos != len(tail):
        raise InvalidInput(
            f"the body holds {len(tail)} bytes after its JSON part; the inputs' "
            f"binary_data_size add up to {pos}"
        )
    return pieces


# --- responses -----------------------------------------------------------------------------------


class _Output(msgspec.Struct, omit_defaults=True):
    """An output tensor, its members in the order of the plain JSON answer's
    (``server.payload.InferOutput``)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class _Response(msgspec.Struct, omit_defaults=True):
    model_name: str
    outputs: list[_Output]
    model_version: str
    id: str | None = None


_encode = msgspec.json.Encoder().encode


def encode_response(
    card: ModelCard, request_id: str, spec: InferSpec, scores: np.ndarray
) -> tuple[bytes, int | None]:
    """The answer's body, and the length of its JSON part when some output is binary (the
    value of ``Inference-Header-Content-Length``; None: the body is all JSON)."""
    tensors = outputs(card, scores, spec.outputs)
    items: list[_Output] = []
    parts: list[bytes] = []
    for tensor, binary in zip(tensors, spec.binary, strict=True):
        if binary:
            raw = to_raw(tensor.array, tensor.datatype)
            parts.append(raw)
            params: dict[str, Any] = {"binary_data_size": len(raw)}
            items.append(_Output(tensor.name, tensor.shape, tensor.datatype, parameters=params))
        else:
            data = tensor.array.ravel().tolist()
            items.append(_Output(tensor.name, tensor.shape, tensor.datatype, data))
    head = _encode(
        _Response(
            model_name=card.name,
            model_version=str(card.version),
            outputs=items,
            id=spec.id if spec.id is not None else request_id,
        )
    )
    if not parts:
        return head, None
    return b"".join([head, *parts]), len(head)
