"""One input per column to the row matrix: how every front door (``/v2`` JSON, binary tensors,
gRPC) reads a typed model's request (``server.oip.schema`` states the inputs).

Each front door only says where an input's values are (:data:`Load`: a JSON ``data`` array, a
raw tensor, gRPC typed contents); :func:`column_steps` checks the inputs against the model's
columns, then turns each column's values into row-matrix codes with the model's
:class:`server.columns.Codec` (one place maps raw values to codes: category lookup, unseen values
served or refused per column, errors naming the row and the column). It is a generator that
pauses after each input's decoding and after each slice of :data:`SLICE_VALUES` values, so a
large body is decoded with the event loop free between pauses (:func:`rows_yielding`), and a
small one straight through (:func:`rows_now`).

A numeric column's values go to float32 in one numpy call (a missing value, JSON ``null``, is
NaN); the others value by value through ``Codec.code`` (about 0.3 µs a value).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Generator, Sequence
from typing import Any

import msgspec
import numpy as np

from server.columns import Codec
from server.errors import InvalidInput
from server.modelcard import InputSpec, ModelCard
from server.oip.schema import Tensor, match_columns

SLICE_VALUES = 2048
"""Values turned into codes between two pauses of :func:`column_steps` (~0.6 ms of category
lookups at most)."""

Values = list[Any] | np.ndarray
"""One input's values, flat, one per row: a list (JSON, gRPC typed contents) or an array (raw)."""
Load = Callable[[int], Values]
"""The values of the request's ``i``-th input."""

_strings = msgspec.json.Decoder(list[str | list[str | None] | None])
_booleans = msgspec.json.Decoder(list[bool | list[bool | None] | None])
_numbers = msgspec.json.Decoder(list[float | list[float | None] | None])
_GOT = re.compile(r"got `(\w+)`")
_AT = re.compile(r"at `\$((?:\[\d+\])+)`")
_KINDS = {"str": "a string", "bool": "true or false", "array": "a list", "object": "an object"}
_KINDS.update({"int": "a number", "float": "a number", "null": "null"})

_codecs: dict[int, tuple[InputSpec, Codec]] = {}


def codec_for(card: ModelCard) -> Codec:
    """The model version's :class:`Codec`, made once per card (kept while the card lives)."""
    spec = card.input
    hit = _codecs.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(_codecs) >= 64:  # reloads made new cards: drop the old ones' codecs
        _codecs.clear()
    codec = Codec(spec)
    _codecs[id(spec)] = (spec, codec)
    return codec


# --- values from the wire ---------------------------------------------------------------------


def json_values(data: bytes, datatype: str, name: str, rows: int) -> list[Any]:
    """An input's JSON ``data`` (flat, or one one-value list per row) as a flat list: strings
    for BYTES, true/false for BOOL, numbers otherwise; ``null`` (missing) is None.

    ``data`` holding more values than ``rows`` is refused before it is decoded (a count at
    memory speed: a body of millions of tiny values would hold the event loop for 100+ ms)."""
    count = value_count(data, rows)
    if count > rows:
        raise InvalidInput(
            f"input `{name}` has {count} values in `data` for {rows} rows (one value per row)"
        )
    decoder = _strings if datatype == "BYTES" else _booleans if datatype == "BOOL" else _numbers
    try:
        values = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidInput(_json_problem(str(exc), datatype, name)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidInput(f"input `{name}`: `data` is not a JSON array ({exc})") from None
    if data.find(b"[", 1) >= 0 and any(isinstance(v, list) for v in values):
        flat: list[Any] = []
        for row, v in enumerate(values):
            if not isinstance(v, list):
                raise InvalidInput(
                    f"input `{name}`: `data` mixes values and lists (row {row}); send one value "
                    "per row, or one one-value list per row"
                )
            if len(v) != 1:
                raise InvalidInput(
                    f"input `{name}`: `data[{row}]` holds {len(v)} values; a row of one column "
                    "holds one"
                )
            flat.append(v[0])
        return flat
    return values


def value_count(data: bytes, rows: int) -> int:
    """How many values a JSON array of values (or of one-value lists) holds, counted at memory
    speed: the commas outside its strings, plus one (a string has two quotes; the array is split
    at its quotes only when they are few enough to be ``rows`` strings, else their count is the
    answer). Escaped backslashes and quotes are dropped first (escapes read left to right, as
    JSON does), so every quote left is a string's edge."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes = data.count(b'"')
    if quotes == 0:
        return data.count(b",") + 1
    strings = quotes // 2
    if strings > rows:
        return strings
    return sum(piece.count(b",") for piece in data.split(b'"')[0::2]) + 1


def _json_problem(text: str, datatype: str, name: str) -> str:
    got = _GOT.search(text)
    at = _AT.search(text)
    kind = _KINDS.get(got.group(1), got.group(1)) if got else "a value of another type"
    if at is None:
        return f"input `{name}`: `data` must be an array, got {kind}"
    index = [int(i) for i in re.findall(r"\d+", at.group(1))]
    if len(index) > 1 and kind == "a list":
        return f"input `{name}`: `data[{index[0]}]` is nested deeper than one value per row"
    wanted = (
        "strings" if datatype == "BYTES" else "true or false" if datatype == "BOOL" else "numbers"
    )
    return (
        f"input `{name}`: `data{at.group(1)}` (row {index[0]}) is {kind}; {datatype} data are "
        f"{wanted} (null for a missing value)"
    )


def texts(items: Sequence[bytes] | np.ndarray, name: str) -> list[str]:
    """BYTES elements as text (UTF-8)."""
    out: list[str] = []
    for row, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
            continue
        try:
            out.append(bytes(item).decode())
        except UnicodeDecodeError:
            raise InvalidInput(f"input `{name}`: element {row} is not UTF-8 text") from None
    return out


# --- values to codes -----------------------------------------------------------------------------


def column_codes(codec: Codec, j: int, values: Values, first: int) -> np.ndarray:
    """Values of column ``j`` (rows ``first`` on) as float32 codes; :class:`InvalidInput`
    naming the row and the column for a value the column does not take."""
    column = codec.columns[j]
    if column.kind != "numeric":
        raw = values.tolist() if isinstance(values, np.ndarray) else values
        return codec.encode_column(j, raw, first)
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(values, np.ndarray):
            codes = values.astype(np.float32)
        else:
            codes = np.asarray(values, dtype=np.float64).astype(np.float32)
    bad = ~np.isfinite(codes)
    if column.allow_missing:
        bad &= ~np.isnan(codes)
    if bad.any():
        r = int(np.argmax(bad))
        value = values[r]
        codec.code(j, value.item() if isinstance(value, np.generic) else value, first + r)
        raise InvalidInput(f"row {first + r} column {column.name!r} is not a finite number")
    return codes


def column_steps(
    card: ModelCard, specs: Sequence[Tensor], load: Load, max_rows: int
) -> Generator[None, None, np.ndarray]:
    """The row matrix of a request of one input per column (``specs``: its inputs, ``load``:
    their values), pausing between pieces of work."""
    where, n = match_columns(card, specs, max_rows)
    codec = codec_for(card)
    rows = np.empty((n, card.input.n_features), dtype=np.float32)
    for j, i in enumerate(where):
        name = specs[i].name
        values = load(i)
        if isinstance(values, np.ndarray):
            values = values.reshape(-1)
        if len(values) != n:
            raise InvalidInput(
                f"input `{name}` has {len(values)} values for shape {list(specs[i].shape)} "
                f"(one value per row)"
            )
        yield
        for start in range(0, n, SLICE_VALUES):
            stop = min(n, start + SLICE_VALUES)
            rows[start:stop, j] = column_codes(codec, j, values[start:stop], start)
            if stop < n:
                yield
    return rows


def rows_now(steps: Generator[None, None, np.ndarray]) -> np.ndarray:
    """Run :func:`column_steps` straight through."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            rows: np.ndarray = done.value
            return rows


async def rows_yielding(steps: Generator[None, None, np.ndarray]) -> np.ndarray:
    """Run :func:`column_steps` with the event loop free at every pause."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            rows: np.ndarray = done.value
            return rows
        await asyncio.sleep(0)
