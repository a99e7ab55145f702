"""``/v2`` infer bodies in JSON (the Open Inference Protocol's REST form): decoded and checked
against the model's tensors (``server.oip.schema``), small bodies at once and large ones a slice
at a time (``server.large_bodies``).

A one-tensor model (every column numeric) takes the FP32 matrix on the benchmarked path below.
A typed model (and a one-tensor model sent one input per column, as MLServer's ``PandasCodec``
sends a DataFrame) goes through ``server.oip.typed``: the body is decoded with each input's
``data`` left raw, the inputs are checked against the columns, then each input's ``data`` is
decoded and coded in turn; a large body the same way with the event loop free after each input
and each slice of values (:func:`decode_infer_large`). The per-column path does not pre-count
the body (``server.body_bounds`` counts rows of numbers): its work is bounded by the body size
(``max_body_bytes``) and by the row count the inputs' shapes state, checked before any ``data``
is decoded."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import msgspec
import numpy as np

from server.body_bounds import SCAN_FROM, bound_work, bound_work_yielding
from server.errors import InvalidInput, PayloadTooLarge
from server.input_errors import explain_v2, slice_problem
from server.large_bodies import (
    NESTED,
    SLICE_BYTES,
    SLICE_ROWS,
    VALUE_BYTES,
    check_row_sizes,
    flat_decoder,
    mixed_decoder,
    raw_list_decoder,
)
from server.modelcard import ModelCard
from server.oip.schema import Tensor, check_inputs, check_outputs, names_columns, per_column
from server.oip.typed import column_steps, json_values, rows_now, rows_yielding
from server.payload import F32, Number, check_rows, decode_json, to_float32

# --- /v2 (Open Inference Protocol) ---------------------------------------------------------------

Parameters = dict[str, Any]


class InferInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Number | list[Number]]
    """Row-major: flat, or one list per row. Numbers (``null`` for missing) as in /v1."""
    parameters: Parameters | None = None


class RequestedOutput(msgspec.Struct):
    name: str
    parameters: Parameters | None = None


class InferRequest(msgspec.Struct):
    inputs: list[InferInput]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestedOutput] | None = None


class InferOutput(msgspec.Struct, omit_defaults=True):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: Parameters | None = msgspec.field(default=None)


class InferResponse(msgspec.Struct, omit_defaults=True):
    model_name: str
    outputs: list[InferOutput]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None


_v2_decoder = msgspec.json.Decoder(InferRequest)


class _RawInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: msgspec.Raw
    parameters: Parameters | None = None


class _RawInfer(msgspec.Struct):
    inputs: list[_RawInput]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestedOutput] | None = None


_raw_infer_decoder = msgspec.json.Decoder(_RawInfer)


def decode_infer(body: bytes, card: ModelCard, max_rows: int) -> tuple[np.ndarray, InferRequest]:
    """A V2 infer body → float32 rows [n, n_features] (the row matrix) and the decoded
    request (per-column inputs: their ``data`` left out)."""
    if per_column(card):
        steps, req = _column_steps(_decode_raw(body, card), card, max_rows)
        return rows_now(steps), req
    if len(body) > SCAN_FROM:
        bound_work(body, card, max_rows)
    try:
        req = decode_json(_v2_decoder, body)
    except msgspec.ValidationError as exc:
        problem = explain_v2(exc, card)
        try:  # one input per column, with strings or booleans?
            raw_req = decode_json(_raw_infer_decoder, body)
        except (msgspec.ValidationError, InvalidInput):
            raise problem from None
        if not names_columns(card, [r.name for r in raw_req.inputs]):
            raise problem from None
        steps, req = _column_steps(raw_req, card, max_rows)
        return rows_now(steps), req
    inputs = req.inputs
    if (
        inputs
        and inputs[0].name != card.input.name
        and names_columns(card, [t.name for t in inputs])
    ):
        steps, req = _column_steps(_decode_raw(body, card), card, max_rows)
        return rows_now(steps), req
    shape = check_tensor(req, card, max_rows)
    tensor = req.inputs[0]
    rows = tensor_rows(data_values(tensor.data, tensor.name, shape), tensor.name, shape)
    return check_rows(rows, card, max_rows), req


def data_values(
    data: list[Number | list[Number]], name: str, shape: list[int], first: int = 0
) -> np.ndarray:
    """``data`` (numbers and nulls only: the decoder saw to it), flat or one list per row, as
    float32; ``first``: the number of its first row, when it is a slice of the rows."""
    if data and isinstance(data[0], list):
        for i, row in enumerate(data, first):
            if not isinstance(row, list):
                raise InvalidInput(f"input {name!r}: `data` mixes numbers and lists (row {i})")
            if len(row) != shape[1]:
                raise InvalidInput(
                    f"input {name!r}: row {i} of `data` has {len(row)} values; the shape "
                    f"{shape} says {shape[1]}"
                )
    try:
        return to_float32(data)
    except InvalidInput:
        if any(isinstance(value, list) for value in data):
            raise InvalidInput(f"input {name!r}: `data` mixes numbers and lists") from None
        raise


def check_tensor(req: InferRequest, card: ModelCard, max_rows: int) -> list[int]:
    """The shape of the one input, once the inputs' names, datatypes and shapes and the requested
    outputs agree with the model's metadata (``server.oip.schema``: an unknown, missing or
    repeated input, another datatype or shape, an output the model does not give are 400)."""
    specs = [Tensor(t.name, t.datatype, t.shape) for t in req.inputs]
    shape = specs[check_inputs(card, specs, max_rows)].shape
    if req.outputs is not None:
        check_outputs(card, [o.name for o in req.outputs])
    return shape


def tensor_rows(values: np.ndarray, name: str, shape: list[int]) -> np.ndarray:
    if values.ndim == 1 and values.size == shape[0] * shape[1]:
        return values.reshape(shape)
    if values.ndim == 2 and list(values.shape) == shape:
        return values
    raise InvalidInput(
        f"input {name!r} has {values.size} values"
        + (f" in {values.shape[0]} rows" if values.ndim == 2 else "")
        + f" for shape {shape}"
    )


def _decode_raw(body: bytes, card: ModelCard) -> _RawInfer:
    try:
        return decode_json(_raw_infer_decoder, body)
    except msgspec.ValidationError as exc:
        raise explain_v2(exc, card) from None


def _specs(raw_req: _RawInfer) -> list[Tensor]:
    return [Tensor(r.name, r.datatype, r.shape) for r in raw_req.inputs]


def _without_data(raw_req: _RawInfer) -> InferRequest:
    empties = [InferInput(r.name, r.shape, r.datatype, [], r.parameters) for r in raw_req.inputs]
    return InferRequest(empties, raw_req.id, raw_req.parameters, raw_req.outputs)


def _column_steps(
    raw_req: _RawInfer, card: ModelCard, max_rows: int
) -> tuple[Generator[None, None, np.ndarray], InferRequest]:
    """The steps that decode a request of one input per column (``server.oip.typed``)."""
    req = _without_data(raw_req)
    if req.outputs is not None:
        check_outputs(card, [o.name for o in req.outputs])
    inputs = raw_req.inputs

    def load(i: int) -> list[Any]:
        raw = inputs[i]
        return json_values(bytes(raw.data), raw.datatype, raw.name, raw.shape[0])

    return column_steps(card, _specs(raw_req), load, max_rows), req


async def decode_infer_large(
    body: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, InferRequest]:
    """:func:`decode_infer` for a large body, ``data`` a slice at a time (same answers)."""
    typed = per_column(card)
    if not typed:
        await bound_work_yielding(body, card, max_rows)
    raw_req = _decode_raw(body, card)
    await asyncio.sleep(0)
    if typed or names_columns(card, [r.name for r in raw_req.inputs]):
        steps, typed_req = _column_steps(raw_req, card, max_rows)
        return await rows_yielding(steps), typed_req
    req = _without_data(raw_req)
    shape = check_tensor(req, card, max_rows)  # the model's one input, and nothing else
    raw = raw_req.inputs[0]
    data = bytes(raw.data)
    if data[:1] != b"[":
        raise InvalidInput(f"input {raw.name!r}: `data` must be an array of numbers")
    if NESTED.match(data):  # one list per row
        rows_raw = decode_json(raw_list_decoder, data)
        if len(rows_raw) > max_rows:
            for i, row_raw in enumerate(rows_raw[: max_rows + 1]):
                if bytes(memoryview(row_raw)[:1]) != b"[":
                    raise InvalidInput(
                        f"input {raw.name!r}: `data` mixes numbers and lists (row {i})"
                    )
            raise PayloadTooLarge(f"{len(rows_raw)} rows in one request; the limit is {max_rows}")
        parts = []
        for start in range(0, len(rows_raw), SLICE_ROWS):
            await asyncio.sleep(0)
            piece = rows_raw[start : start + SLICE_ROWS]
            check_row_sizes(piece, card, start)
            try:
                lists = mixed_decoder.decode(b"[" + b",".join(piece) + b"]")
            except msgspec.ValidationError as exc:
                raise slice_problem(exc, card, start) from None
            if not isinstance(lists[0], list):
                raise InvalidInput(
                    f"input {raw.name!r}: `data` mixes numbers and lists (row {start})"
                )
            parts.append(data_values(lists, raw.name, shape, start))
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
    elif any(c in data for c in (b'"', b"{")) or data.find(b"[", 1) >= 0:
        # strings, objects or lists after a number: refused; one decode says where
        try:
            values = data_values(mixed_decoder.decode(data), raw.name, shape)
        except msgspec.ValidationError as exc:
            raise slice_problem(exc, card, 0) from None
    else:  # flat: slices end at a comma (no strings, so every comma separates two values)
        parts, done, pos, end = [], 0, 1, data.rindex(b"]")
        limit = SLICE_BYTES + VALUE_BYTES
        while pos < end:
            await asyncio.sleep(0)
            cut = data.find(b",", min(pos + SLICE_BYTES, end), end)
            cut = end if cut < 0 else cut
            if cut - pos > limit:
                raise InvalidInput(
                    f"input {raw.name!r}: a value from `data[{done}]` on is longer than "
                    f"{VALUE_BYTES} bytes (a number too long)"
                )
            try:
                values_list = flat_decoder.decode(b"[" + data[pos:cut] + b"]")
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise slice_problem(exc, card, done) from None
            parts.append(to_float32(values_list))
            done += len(values_list)
            pos = cut + 1
        values = np.concatenate(parts) if parts else np.empty(0, F32)
    await asyncio.sleep(0)
    return check_rows(tensor_rows(values, raw.name, shape), card, max_rows), req
