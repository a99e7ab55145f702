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
from server.input_errors import explain_v1
from server.modelcard import ModelCard
from server.payload import (
    Number,
    decode_json,
    decode_predict,
)

LARGE_BODY = 128 * 1024
"""Bodies over this size are decoded by :func:`decode_predict_large` / :func:`decode_infer_large`:
a slice of rows at a time, the event loop free between slices, so a body of the most rows a
request may carry does not hold it for tens of milliseconds."""
SLICE_ROWS = 256
SLICE_BYTES = 32 * 1024
VALUE_BYTES = 64
"""Most bytes one value may take with its separator and whitespace (a float64 needs 24)."""
UNSEEN_BYTES = 128
"""What a category the model has not seen may take beyond the longest known one (a column
whose model serves unknown categories)."""


class _RawRows(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[msgspec.Raw]


NESTED = re.compile(rb"\[\s*\[")
_raw_rows_decoder = msgspec.json.Decoder(_RawRows)
raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
flat_decoder = msgspec.json.Decoder(list[Number])
mixed_decoder = msgspec.json.Decoder(list[Number | list[Number]])


def _row_bytes(card: ModelCard) -> int:
    """The most bytes one row may take (objects: with its keys): a longer one holds something
    no row holds (a number thousands of digits long, a long string), refused before decoding.
    A categorical column's value may be twice as long as its longest category in JSON (plus
    :data:`UNSEEN_BYTES` where the model serves unknown categories)."""
    names = card.input.feature_names
    limit = card.input.n_features * VALUE_BYTES + sum(len(n) + 8 for n in names) + 64
    for column in card.input.columns:
        if column.kind == "categorical":
            longest = max(len(_json(c)) for c in column.categories)
            # twice: a category may be written with JSON escapes (\u00e9 for é)
            limit += 2 * longest + (UNSEEN_BYTES if column.unknown == "serve" else 0)
    return limit


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


def check_row_sizes(raws: list[msgspec.Raw], card: ModelCard, first: int = 0) -> None:
    limit = _row_bytes(card)
    numeric = card.input.numeric_only
    what = "numbers" if numeric else "values"
    for i, raw in enumerate(raws):
        if len(raw) > limit:
            raise InvalidInput(
                f"row {i + first} is {len(raw)} bytes; a row of {card.input.n_features} {what} "
                f"takes at most {limit} (a number too long, "
                + (
                    "or something other than numbers)"
                    if numeric
                    else "or a string longer than any category of its column)"
                )
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
    for start in range(0, n, SLICE_ROWS):
        await asyncio.sleep(0)  # let other requests run between slices
        piece = raws[start : start + SLICE_ROWS]
        check_row_sizes(piece, card, start)
        if bytes(memoryview(piece[0])[:1]) != form:
            raise InvalidInput("'instances' mixes lists and objects; use one form per request")
        sliced = b'{"instances": [' + b",".join(piece) + b"]}"
        parts.append(decode_predict(sliced, card, max_rows, start))
    await asyncio.sleep(0)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
