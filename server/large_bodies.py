"""Large bodies a slice of rows at a time: the same answers as ``server.payload``'s decoders,
with the event loop free between slices, so a body of the most rows a request may carry does not
hold other requests for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import re

import msgspec
import numpy as np

from server.body_bounds import bound_work_yielding
from server.errors import InvalidInput, PayloadTooLarge
from server.input_errors import explain_v1, explain_v2, slice_problem
from server.modelcard import ModelCard
from server.payload import (
    F32,
    InferInput,
    InferRequest,
    Number,
    Parameters,
    RequestedOutput,
    check_rows,
    check_tensor,
    data_values,
    decode_json,
    decode_predict,
    tensor_rows,
    to_float32,
)

LARGE_BODY = 128 * 1024
"""Bodies over this size are decoded by :func:`decode_predict_large` / :func:`decode_infer_large`:
a slice of rows at a time, the event loop free between slices, so a body of the most rows a
request may carry does not hold it for tens of milliseconds."""
_SLICE_ROWS = 256
_SLICE_BYTES = 32 * 1024
_VALUE_BYTES = 64
"""Most bytes one value may take with its separator and whitespace (a float64 needs 24)."""


class _RawRows(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[msgspec.Raw]


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


_NESTED = re.compile(rb"\[\s*\[")
_raw_rows_decoder = msgspec.json.Decoder(_RawRows)
_raw_infer_decoder = msgspec.json.Decoder(_RawInfer)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_flat_decoder = msgspec.json.Decoder(list[Number])
_mixed_decoder = msgspec.json.Decoder(list[Number | list[Number]])


def _row_bytes(card: ModelCard) -> int:
    """The most bytes one row may take (objects: with its keys): a longer one holds something
    no row holds (a number thousands of digits long, a long string), refused before decoding."""
    names = card.input.feature_names
    return card.input.n_features * _VALUE_BYTES + sum(len(n) + 8 for n in names) + 64


def _check_row_sizes(raws: list[msgspec.Raw], card: ModelCard, first: int = 0) -> None:
    limit = _row_bytes(card)
    for i, raw in enumerate(raws):
        if len(raw) > limit:
            raise InvalidInput(
                f"row {i + first} is {len(raw)} bytes; a row of {card.input.n_features} numbers "
                f"takes at most {limit} (a number too long, or something other than numbers)"
            )


async def decode_predict_large(body: bytes, card: ModelCard, max_rows: int) -> np.ndarray:
    """:func:`decode_predict` for a large body, a slice of rows at a time (same answers)."""
    await bound_work_yielding(body, card, max_rows)
    try:
        raws = decode_json(_raw_rows_decoder, body).instances  # splits rows, decodes no number
    except msgspec.ValidationError as exc:
        raise explain_v1(exc, body, card) from None
    await asyncio.sleep(0)
    n = len(raws)
    if n > max_rows:
        raise PayloadTooLarge(f"{n} rows in one request; the limit is {max_rows}")
    if n == 0:
        raise InvalidInput('no rows: "instances" is empty')
    form = bytes(memoryview(raws[0])[:1])
    parts = []
    for start in range(0, n, _SLICE_ROWS):
        await asyncio.sleep(0)  # let other requests run between slices
        piece = raws[start : start + _SLICE_ROWS]
        _check_row_sizes(piece, card, start)
        if bytes(memoryview(piece[0])[:1]) != form:
            raise InvalidInput("'instances' mixes lists and objects; use one form per request")
        sliced = b'{"instances": [' + b",".join(piece) + b"]}"
        parts.append(decode_predict(sliced, card, max_rows, start))
    await asyncio.sleep(0)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


async def decode_infer_large(
    body: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, InferRequest]:
    """:func:`decode_infer` for a large body, ``data`` a slice at a time (same answers)."""
    await bound_work_yielding(body, card, max_rows)
    try:
        raw_req = decode_json(_raw_infer_decoder, body)
    except msgspec.ValidationError as exc:
        raise explain_v2(exc, card) from None
    await asyncio.sleep(0)
    empties = [InferInput(r.name, r.shape, r.datatype, [], r.parameters) for r in raw_req.inputs]
    req = InferRequest(empties, raw_req.id, raw_req.parameters, raw_req.outputs)
    shape = check_tensor(req, card, max_rows)  # the model's one input, and nothing else
    raw = raw_req.inputs[0]
    data = bytes(raw.data)
    if data[:1] != b"[":
        raise InvalidInput(f"input {raw.name!r}: `data` must be an array of numbers")
    if _NESTED.match(data):  # one list per row
        rows_raw = decode_json(_raw_list_decoder, data)
        if len(rows_raw) > max_rows:
            for i, row_raw in enumerate(rows_raw[: max_rows + 1]):
                if bytes(memoryview(row_raw)[:1]) != b"[":
                    raise InvalidInput(
                        f"input {raw.name!r}: `data` mixes numbers and lists (row {i})"
                    )
            raise PayloadTooLarge(f"{len(rows_raw)} rows in one request; the limit is {max_rows}")
        parts = []
        for start in range(0, len(rows_raw), _SLICE_ROWS):
            await asyncio.sleep(0)
            piece = rows_raw[start : start + _SLICE_ROWS]
            _check_row_sizes(piece, card, start)
            try:
                lists = _mixed_decoder.decode(b"[" + b",".join(piece) + b"]")
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
            values = data_values(_mixed_decoder.decode(data), raw.name, shape)
        except msgspec.ValidationError as exc:
            raise slice_problem(exc, card, 0) from None
    else:  # flat: slices end at a comma (no strings, so every comma separates two values)
        parts, done, pos, end = [], 0, 1, data.rindex(b"]")
        limit = _SLICE_BYTES + _VALUE_BYTES
        while pos < end:
            await asyncio.sleep(0)
            cut = data.find(b",", min(pos + _SLICE_BYTES, end), end)
            cut = end if cut < 0 else cut
            if cut - pos > limit:
                raise InvalidInput(
                    f"input {raw.name!r}: a value from `data[{done}]` on is longer than "
                    f"{_VALUE_BYTES} bytes (a number too long)"
                )
            try:
                values_list = _flat_decoder.decode(b"[" + data[pos:cut] + b"]")
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise slice_problem(exc, card, done) from None
            parts.append(to_float32(values_list))
            done += len(values_list)
            pos = cut + 1
        values = np.concatenate(parts) if parts else np.empty(0, F32)
    await asyncio.sleep(0)
    return check_rows(tensor_rows(values, raw.name, shape), card, max_rows), req
