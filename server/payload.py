"""Request decoding and validation: raw JSON bytes to float32 rows in one pass, and back.

The decoders are compiled once (msgspec); list-of-lists bodies go to numpy in one call, with no
per-value Python loop. Every problem is an :class:`InvalidInput` (or :class:`PayloadTooLarge`)
that names it; HTTP status codes live in ``server.http_errors``.

Missing values: JSON has no NaN, so a missing feature is ``null``. Models whose card says
``allow_missing`` (trees) accept it as NaN; others refuse it. Infinity (a number too large for
float32, such as 1e39) is refused for every model. /v1 and /v2 take the same values: JSON
numbers (and ``null``); never strings such as ``"1.0"`` or ``"nan"``, never ``true``/``false``.

Limits come before the work they bound: a body over 16 KiB is first counted at memory speed
(``bytes.count``: commas bound the number of JSON values, ``[`` and ``{`` the number of arrays
and objects); one that must hold more than ``max_rows`` rows can carry is refused (413) before it
is decoded, so no request costs the event loop more than decoding the largest valid one. The
decoders are typed, so nesting deeper than a row is refused where it starts; free-form
``parameters`` are refused past the interpreter's recursion limit (400, never a 500).
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import math
import os
import re
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeVar, cast

import msgspec
import numpy as np

from server.batcher import CacheMode
from server.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType, VersionNotFound
from server.modelcard import ModelCard

Number = float | None
Row = list[Number] | dict[str, Number]
T = TypeVar("T")


# --- /v1 -----------------------------------------------------------------------------------------


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``{"instances": [[f1, f2, ...], ...]}`` or ``{"instances": [{"name": value, ...}, ...]}``."""

    instances: list[Row]


class Prediction(msgspec.Struct):
    label: int
    """Positive class when its score reaches the model's threshold (binary), else the argmax."""
    scores: list[float]
    """One probability per class, in the order of ``classes``."""


class PredictResponse(msgspec.Struct):
    model: str
    version: int
    request_id: str
    classes: list[int]
    predictions: list[Prediction]


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


V2_OUTPUTS = ("probabilities", "label")


class _ListRows(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[list[Number]]


_v1_decoder = msgspec.json.Decoder(PredictRequest)
_v1_lists_decoder = msgspec.json.Decoder(_ListRows)  # the common form, decoded ~20% faster
_v2_decoder = msgspec.json.Decoder(InferRequest)
_encoder = msgspec.json.Encoder()
encode = _encoder.encode


_SCAN_FROM = 16 * 1024
"""Bodies up to this size are decoded without a pre-scan: whatever they hold, well under 1 ms."""
_SLACK = 1024
"""Commas and containers a body may hold besides its rows (keys, shape, ``parameters``, ...)."""


def bound_work(body: bytes, card: ModelCard, max_rows: int) -> None:
    """Refuse (413), before decoding, a body that holds more than ``max_rows`` rows can carry.

    Decoding costs about one step per JSON value and per array or object; a valid request holds
    at most ``max_rows`` rows of ``n_features`` values, so at most about ``max_rows *
    n_features`` commas and ``max_rows`` arrays or objects (plus what the feature names, used as
    keys, hold and ``_SLACK``). Counting is a C loop at memory speed (~1 ms for 4 MB), and a
    body that passes costs no more to decode than the largest valid one."""
    if len(body) > _SCAN_FROM:
        for _ in _bound_steps(body, card, max_rows):
            pass


async def _bound_work_yielding(body: bytes, card: ModelCard, max_rows: int) -> None:
    """:func:`bound_work` with the event loop free between its passes over the body (each
    takes a few ms on a 4 MB body)."""
    for _ in _bound_steps(body, card, max_rows):
        await asyncio.sleep(0)


def _bound_steps(body: bytes, card: ModelCard, max_rows: int) -> Iterator[None]:
    names = card.input.feature_names
    per_row_opens = 1 + sum(name.count("[") + name.count("{") for name in names)
    opens = body.count(b"[")
    yield
    opens += body.count(b"{")
    if opens > max_rows * per_row_opens + _SLACK:
        raise PayloadTooLarge(
            f"the body holds {opens} arrays or objects: more than {max_rows} rows (the limit per "
            "request) can carry; refused before decoding"
        )
    yield
    per_row_commas = card.input.n_features + sum(name.count(",") for name in names)
    commas = body.count(b",")
    if commas > max_rows * per_row_commas + _SLACK:
        raise PayloadTooLarge(
            f"the body holds about {commas + 1} values: more than {max_rows} rows of "
            f"{card.input.n_features} features (the limit per request) can carry; refused before "
            "decoding"
        )
    yield


_AT = re.compile(r"\A(?P<what>.*) - at `\$(?P<path>[^`]*)`\Z", re.DOTALL)
_INDEX = re.compile(r"\[(\d+|\.\.\.)\]")
_GOT = re.compile(r"got `(\w+)`")
_KINDS = {
    "str": "a string",
    "bool": "true or false",
    "array": "an array",
    "object": "an object",
    "int": "an integer",
    "float": "a number",
    "null": "null",
}


def _wanted(card: ModelCard) -> str:
    return "a number or null" if card.input.allow_missing else "a number"


def _got(what: str) -> str:
    found = _GOT.search(what)
    return _KINDS.get(found.group(1), found.group(1)) if found else ""


def _feature(card: ModelCard, column: int) -> str:
    names = card.input.feature_names
    if column < len(names):
        return f"feature `{names[column]}`"
    return f"value {column} (the model has {len(names)} features)"


def _value_problem(what: str, card: ModelCard) -> str:
    """``expected a number, got a string`` from msgspec's ``Expected `float | null`, got `str```."""
    if what.startswith("Number out of range"):
        return "number out of range"
    got = _got(what)
    return f"expected {_wanted(card)}, got {got}" if got else what


def _object_row_key(body: bytes, row: int) -> str | None:
    """The first feature of object row ``row`` whose value is not a number or null (an error
    path only: msgspec's path does not name the key of a bad dict value)."""
    try:
        instances = msgspec.json.decode(body)["instances"]
        for key, value in instances[row].items():
            if not (
                value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            ):
                return str(key)
    except (msgspec.DecodeError, RecursionError, LookupError, TypeError, AttributeError):
        pass
    return None


def _explain_v1(
    exc: msgspec.ValidationError, body: bytes, card: ModelCard, first: int = 0
) -> InvalidInput:
    """msgspec's message on a /v1 body, rewritten to name the row and feature that is wrong
    (``first``: the number of the body's first row, when it holds a slice of the request's)."""
    text = str(exc)
    if text.startswith("Object contains unknown field") or text.startswith(
        "Object missing required field"
    ):
        field = text.rsplit(" ", 1)[-1]
        if b'"instances"' not in body:
            got = f" (this one has {field})" if "unknown" in text else ""
            return InvalidInput(
                f'`instances` is missing: a /v1 body is {{"instances": [row, ...]}}{got}'
            )
        return InvalidInput(f'unknown field {field}: a /v1 body has only "instances"')
    found = _AT.match(text)
    if found is None:
        if text.startswith("Expected `object`"):
            return InvalidInput(
                f'the body must be a JSON object {{"instances": [row, ...]}}: {text}'
            )
        return InvalidInput(f"invalid request body: {text}")
    what, path = found.group("what"), found.group("path")
    index = _INDEX.findall(path)
    if path == ".instances":
        return InvalidInput(f"`instances` must be a list of rows, got {_got(what) or what}")
    if path.startswith(".instances") and len(index) == 1:
        row_text = str(int(index[0]) + first) if index[0].isdigit() else index[0]
        return InvalidInput(
            f"row {row_text} must be a list of {card.input.n_features} numbers or an object of "
            f"feature: value, got {_got(what) or what}"
        )
    if path.startswith(".instances") and len(index) == 2 and index[0].isdigit():
        row = int(index[0])
        if index[1].isdigit():
            feature = _feature(card, int(index[1]))
        else:
            key = _object_row_key(body, row)
            feature = f"feature `{key}`" if key is not None else "a feature"
        return InvalidInput(f"row {row + first} {feature}: {_value_problem(what, card)}")
    return InvalidInput(f"invalid request body: {what} at `{path or '$'}`")


def _explain_v2(exc: msgspec.ValidationError, card: ModelCard) -> InvalidInput:
    """msgspec's message on a /v2 body; a bad value in ``data`` is named by row and feature."""
    text = str(exc)
    found = _AT.match(text)
    if found is None:
        return InvalidInput(f"invalid request body: {text}")
    what, path = found.group("what"), found.group("path")
    data = re.fullmatch(r"\.inputs\[\d+\]\.data((?:\[\d+\]){1,2})", path)
    if data is not None:
        return _data_problem(what, [int(i) for i in _INDEX.findall(data.group(1))], card)
    return InvalidInput(f"invalid request body: {what} at `{path or '$'}`")


def _data_problem(what: str, index: list[int], card: ModelCard) -> InvalidInput:
    """A bad value at ``data[k]`` (flat, row-major) or ``data[row][column]`` (nested)."""
    if len(index) == 1:
        row, column = divmod(index[0], card.input.n_features)
    else:
        row, column = index
    where = "`data" + "".join(f"[{i}]" for i in index) + f"` (row {row} {_feature(card, column)})"
    if _got(what) == "an array":
        return InvalidInput(f"{where}: nested deeper than [rows, features]")
    return InvalidInput(f"{where}: {_value_problem(what, card)}")


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode, or raise InvalidInput for malformed JSON; a ValidationError is left to explain."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(
            "JSON nested too deeply (rows are at most [rows, features]; parameters a few levels)"
        ) from None


def _check_rows(rows: np.ndarray, card: ModelCard, max_rows: int, first: int = 0) -> np.ndarray:
    n = rows.shape[0]
    if n == 0:
        raise InvalidInput("no rows to score")
    if n > max_rows:
        raise PayloadTooLarge(f"{n} rows in one request; the limit is {max_rows}")
    if rows.ndim != 2 or rows.shape[1] != card.input.n_features:
        got = rows.shape[1] if rows.ndim == 2 else "a ragged number of"
        raise InvalidInput(
            f"model {card.name} expects {card.input.n_features} features per row, got {got}"
        )
    finite = np.isfinite(rows)
    if not finite.all():
        bad = ~finite
        if card.input.allow_missing:
            bad &= ~np.isnan(rows)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            what = (
                "infinite or out of float32 range"
                if card.input.allow_missing
                else ("missing (null), NaN or out of float32 range")
            )
            raise InvalidInput(
                f"row {r + first} feature {card.input.feature_names[c]!r} is {what}"
                + ("" if card.input.allow_missing else f"; model {card.name} needs every value")
            )
    return rows


def _to_float32(values: Any) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"rows are not a rectangular array of numbers ({exc})") from None


def _rows_from_dicts(rows: list[Row], names: list[str], first: int = 0) -> list[list[Number]]:
    wanted = set(names)
    out: list[list[Number]] = []
    for i, row in enumerate(rows, first):
        if not isinstance(row, dict):
            raise InvalidInput("'instances' mixes lists and objects; use one form per request")
        try:
            out.append([row[name] for name in names])
        except KeyError:
            raise InvalidInput(_names_problem(i, row, names, wanted)) from None
        if len(row) != len(names):
            raise InvalidInput(_names_problem(i, row, names, wanted))
    return out


def _names_problem(i: int, row: dict[str, Number], names: list[str], wanted: set[str]) -> str:
    """``row 0: `amt`: unknown feature; did you mean `amount`?`` (and what is still missing)."""
    missing = [n for n in names if n not in row]
    unknown = [k for k in row if k not in wanted]
    parts = []
    for key in unknown[:5]:
        close = difflib.get_close_matches(key, missing or names, n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        parts.append(f"`{key}`: unknown feature{hint}")
        if close and close[0] in missing:  # named once: in the suggestion
            missing.remove(close[0])
    if len(unknown) > 5:
        parts.append(f"{len(unknown) - 5} more unknown features")
    if missing:
        shown = ", ".join(f"`{n}`" for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        parts.append(f"missing features {shown}{more}")
    return f"row {i}: " + "; ".join(parts)


def _fast_rows(instances: list[list[Number]], n_features: int, max_rows: int) -> np.ndarray | None:
    """The common case in a few µs: lists of ``n_features`` numbers, no nulls, all finite in
    float32. None when anything else is the case; the general path then says what is wrong."""
    n = len(instances)
    if n == 0 or n > max_rows:
        return None
    values = cast(list[list[float]], instances)  # a null raises TypeError in array()
    flat: array[float]
    try:
        if n == 1:  # one row: array() from the list in one call (~1.2 us in all, not ~2.6)
            if len(values[0]) != n_features:
                return None
            flat = array("f", values[0])
        else:
            flat = array("f")
            for row in values:
                if len(row) != n_features:
                    return None
                flat.extend(row)
    except TypeError:  # a null
        return None
    # ndarray over the array's buffer with a prebuilt dtype: ~0.25 us, frombuffer+reshape ~0.7
    rows = np.ndarray((n, n_features), _F32, flat)
    if n * n_features <= 4096:
        # NaN/inf propagate; a float64 sum of float32 values cannot overflow at this size
        return rows if math.isfinite(sum(flat)) else None
    return rows if bool(np.isfinite(rows).all()) else None


_F32 = np.dtype(np.float32)


def decode_predict(body: bytes, card: ModelCard, max_rows: int, first: int = 0) -> np.ndarray:
    """A /v1 predict body → float32 rows [n, n_features], validated against the card
    (``first``: the number of the body's first row in the request, for messages)."""
    if len(body) > _SCAN_FROM:
        bound_work(body, card, max_rows)
    try:
        lists = _v1_lists_decoder.decode(body).instances
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        lists = None
    if lists is not None:
        if len(lists) > max_rows:
            raise PayloadTooLarge(f"{len(lists)} rows in one request; the limit is {max_rows}")
        fast = _fast_rows(lists, card.input.n_features, max_rows)
        if fast is not None:
            return fast
    try:
        instances = _decode(_v1_decoder, body).instances
    except msgspec.ValidationError as exc:
        raise _explain_v1(exc, body, card, first) from None
    n = len(instances)
    if n > max_rows:  # before any per-row work
        raise PayloadTooLarge(f"{n} rows in one request; the limit is {max_rows}")
    if instances and isinstance(instances[0], dict):
        rows = _to_float32(_rows_from_dicts(instances, card.input.feature_names, first))
    else:
        if any(isinstance(row, dict) for row in instances):
            raise InvalidInput("'instances' mixes lists and objects; use one form per request")
        if n and any(len(row) != card.input.n_features for row in instances):
            i, got = next(
                (i, len(row))
                for i, row in enumerate(instances)
                if len(row) != card.input.n_features
            )
            raise InvalidInput(
                f"model {card.name} expects {card.input.n_features} features per row, "
                f"got {got} in row {i + first}"
            )
        rows = _to_float32(instances)
    if n == 0:
        raise InvalidInput('no rows: "instances" is empty')
    return _check_rows(rows, card, max_rows, first)


def labels_for(rows: list[list[float]], card: ModelCard) -> list[int]:
    """Binary: the positive class when its score reaches the threshold; otherwise the argmax
    (the first class on ties). ``rows`` is ``scores.tolist()``: on a few rows, Python over the
    lists costs ~0.1 us where numpy's column slice and argmax cost ~1 us."""
    classes = card.classes
    if len(classes) == 2:
        pos = card.positive_index
        pos_class, neg_class, threshold = card.positive_class, classes[1 - pos], card.threshold
        return [pos_class if row[pos] >= threshold else neg_class for row in rows]
    return [classes[max(range(len(row)), key=row.__getitem__)] for row in rows]


def encode_predict(card: ModelCard, request_id: str, scores: np.ndarray) -> bytes:
    rows: list[list[float]] = scores.tolist()
    predictions = [
        Prediction(label=label, scores=row)
        for label, row in zip(labels_for(rows, card), rows, strict=True)
    ]
    return encode(
        PredictResponse(
            model=card.name,
            version=card.version,
            request_id=request_id,
            classes=card.classes,
            predictions=predictions,
        )
    )


# --- /v2 -----------------------------------------------------------------------------------------


def decode_infer(body: bytes, card: ModelCard, max_rows: int) -> tuple[np.ndarray, InferRequest]:
    """A V2 infer body → float32 rows [n, n_features] and the decoded request."""
    if len(body) > _SCAN_FROM:
        bound_work(body, card, max_rows)
    try:
        req = _decode(_v2_decoder, body)
    except msgspec.ValidationError as exc:
        raise _explain_v2(exc, card) from None
    shape = _check_tensor(req, card, max_rows)
    tensor = req.inputs[0]
    rows = _tensor_rows(_data_values(tensor.data, tensor.name, shape), tensor.name, shape)
    return _check_rows(rows, card, max_rows), req


def _data_values(
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
        return _to_float32(data)
    except InvalidInput:
        if any(isinstance(value, list) for value in data):
            raise InvalidInput(f"input {name!r}: `data` mixes numbers and lists") from None
        raise


def _check_tensor(req: InferRequest, card: ModelCard, max_rows: int) -> list[int]:
    """The one input tensor's shape, once its count, datatype, shape and outputs are right."""
    if len(req.inputs) != 1:
        raise InvalidInput(
            f"model {card.name} takes exactly one input tensor, got {len(req.inputs)}"
        )
    tensor = req.inputs[0]
    if tensor.datatype.upper() not in {"FP32", "FP64"}:
        raise InvalidInput(f"input {tensor.name!r} must be FP32 (or FP64), got {tensor.datatype}")
    shape = tensor.shape
    if len(shape) != 2 or any(d < 0 for d in shape):
        raise InvalidInput(f"input {tensor.name!r} shape must be [rows, features], got {shape}")
    if shape[0] > max_rows:
        raise PayloadTooLarge(f"{shape[0]} rows in one request; the limit is {max_rows}")
    if shape[0] == 0:
        raise InvalidInput(f"input {tensor.name!r} has no rows (shape {shape})")
    if req.outputs is not None:
        unknown = [o.name for o in req.outputs if o.name not in V2_OUTPUTS]
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown}; this model has {list(V2_OUTPUTS)}")
    return shape


def _tensor_rows(values: np.ndarray, name: str, shape: list[int]) -> np.ndarray:
    if values.ndim == 1 and values.size == shape[0] * shape[1]:
        return values.reshape(shape)
    if values.ndim == 2 and list(values.shape) == shape:
        return values
    raise InvalidInput(
        f"input {name!r} has {values.size} values"
        + (f" in {values.shape[0]} rows" if values.ndim == 2 else "")
        + f" for shape {shape}"
    )


def encode_infer(card: ModelCard, request_id: str, req: InferRequest, scores: np.ndarray) -> bytes:
    wanted = V2_OUTPUTS if req.outputs is None else tuple(o.name for o in req.outputs)
    outputs = []
    n = len(scores)
    for name in wanted:
        if name == "probabilities":
            outputs.append(
                InferOutput(
                    name="probabilities",
                    shape=[n, scores.shape[1]],
                    datatype="FP32",
                    data=scores.ravel().tolist(),
                )
            )
        else:
            outputs.append(
                InferOutput(
                    name="label",
                    shape=[n],
                    datatype="INT64",
                    data=labels_for(scores.tolist(), card),
                )
            )
    return encode(
        InferResponse(
            model_name=card.name,
            model_version=str(card.version),
            id=req.id if req.id is not None else request_id,
            outputs=outputs,
        )
    )


# --- large bodies: a slice of rows at a time ----------------------------------------------------

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
    await _bound_work_yielding(body, card, max_rows)
    try:
        raws = _decode(_raw_rows_decoder, body).instances  # splits rows, decodes no number
    except msgspec.ValidationError as exc:
        raise _explain_v1(exc, body, card) from None
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
    await _bound_work_yielding(body, card, max_rows)
    try:
        raw_req = _decode(_raw_infer_decoder, body)
    except msgspec.ValidationError as exc:
        raise _explain_v2(exc, card) from None
    await asyncio.sleep(0)
    if len(raw_req.inputs) != 1:
        raise InvalidInput(
            f"model {card.name} takes exactly one input tensor, got {len(raw_req.inputs)}"
        )
    raw = raw_req.inputs[0]
    empty = InferInput(raw.name, raw.shape, raw.datatype, [], raw.parameters)
    req = InferRequest([empty], raw_req.id, raw_req.parameters, raw_req.outputs)
    shape = _check_tensor(req, card, max_rows)
    data = bytes(raw.data)
    if data[:1] != b"[":
        raise InvalidInput(f"input {raw.name!r}: `data` must be an array of numbers")
    if _NESTED.match(data):  # one list per row
        rows_raw = _decode(_raw_list_decoder, data)
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
                raise _slice_problem(exc, card, start) from None
            if not isinstance(lists[0], list):
                raise InvalidInput(
                    f"input {raw.name!r}: `data` mixes numbers and lists (row {start})"
                )
            parts.append(_data_values(lists, raw.name, shape, start))
        values = np.concatenate(parts) if len(parts) > 1 else parts[0]
    elif any(c in data for c in (b'"', b"{")) or data.find(b"[", 1) >= 0:
        # strings, objects or lists after a number: refused; one decode says where
        try:
            values = _data_values(_mixed_decoder.decode(data), raw.name, shape)
        except msgspec.ValidationError as exc:
            raise _slice_problem(exc, card, 0) from None
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
                raise _slice_problem(exc, card, done) from None
            parts.append(_to_float32(values_list))
            done += len(values_list)
            pos = cut + 1
        values = np.concatenate(parts) if parts else np.empty(0, _F32)
    await asyncio.sleep(0)
    return _check_rows(_tensor_rows(values, raw.name, shape), card, max_rows), req


def _slice_problem(exc: msgspec.MsgspecError, card: ModelCard, offset: int) -> InvalidInput:
    """A bad value in a slice of ``data`` that starts at ``data[offset]``: named by its index in
    the whole ``data``."""
    found = _AT.match(str(exc)) if isinstance(exc, msgspec.ValidationError) else None
    if found is None:
        return InvalidInput(f"`data` is not an array of numbers: {exc}")
    index = [int(i) for i in _INDEX.findall(found.group("path")) if i.isdigit()]
    if not index:
        return InvalidInput(f"invalid request body: {exc}")
    index[0] += offset
    return _data_problem(found.group("what"), index[:2], card)


# --- headers -------------------------------------------------------------------------------------

_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def new_request_id() -> str:
    """Unique within the process, cheap (no uuid4 per request); the prefix differs per process."""
    return f"{_id_prefix}-{next(_ids)}"


def valid_request_id(value: bytes) -> str | None:
    """An X-Request-ID header value as text when it is 1-128 visible ASCII characters (no space,
    no control character), else None: the one rule for echoing a client's id."""
    if 0 < len(value) <= 128 and value.isascii() and b" " not in value:
        text = value.decode("ascii")
        if text.isprintable():
            return text
    return None


def check_json_media_type(value: bytes) -> None:
    """A JSON route's Content-Type: ``application/json`` or ``application/<x>+json``, with any
    parameters (``charset=utf-8``); anything else is refused (415) before the body is read.

    A request without Content-Type is read as JSON (the caller does not call this): the body
    must still parse, a client that sends none (httpx ``content=``, a bare socket) meant JSON,
    and there is nothing else it could mean. ``curl -d`` sends
    ``application/x-www-form-urlencoded``: refused, with the fix in the message."""
    media = value.split(b";", 1)[0].strip().lower()
    if media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    ):
        return
    shown = media.decode("latin-1")[:100] or "(empty)"
    if media == b"application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"Content-Type {shown} (what curl -d sends) is not JSON; send Content-Type: "
            "application/json (curl: add -H 'Content-Type: application/json', or use --json)"
        )
    raise UnsupportedMediaType(f"Content-Type {shown} is not JSON; send application/json")


_VERSION = re.compile(r"\A(?:0|[1-9][0-9]{0,17})\Z")


def canonical_version(text: str) -> int | None:
    """A path's version as an int when written the one canonical way (ASCII digits, no sign,
    no leading zero, no ``_`` or spaces: ``1``, ``12``), else None. ``int()`` alone would take
    ``+1``, ``0_1``, `` 1`` and other scripts' digits as 1: aliases of one resource."""
    return int(text) if _VERSION.match(text) else None


def path_version(name: str, text: str) -> int:
    """The version in a path, or VersionNotFound (404) when it is not written canonically: the
    path names no version, as ``versions/abc`` names none."""
    version = canonical_version(text)
    if version is None:
        raise VersionNotFound(
            f"model {name} has no version {text!r}: a version is a plain decimal integer, such "
            "as 1 (no sign, leading zero, space or underscore)"
        )
    return version


class RequestMeta(msgspec.Struct):
    request_id: str
    deadline_ms: float | None
    cache_mode: CacheMode


def request_meta(headers: Iterable[tuple[bytes, bytes]]) -> RequestMeta:
    """X-Request-ID (accepted when 1-128 visible ASCII characters), X-Deadline-Ms, Cache-Control;
    a Content-Type that is not JSON is refused (415)."""
    request_id: str | None = None
    deadline_ms: float | None = None
    cache_mode: Literal["default", "no-cache", "no-store"] = "default"
    for key, value in headers:
        if key == b"x-request-id":
            request_id = valid_request_id(value) or request_id
        elif key == b"x-deadline-ms":
            try:
                deadline_ms = float(value)
            except ValueError:
                raise InvalidInput("X-Deadline-Ms must be a number of milliseconds") from None
            if not (deadline_ms >= 0.0 and deadline_ms < 1e9):
                raise InvalidInput("X-Deadline-Ms must be between 0 and 1e9")
        elif key == b"content-type" and value != b"application/json":
            check_json_media_type(value)
        elif key == b"cache-control":
            directives = value.lower()
            if b"no-store" in directives:
                cache_mode = "no-store"
            elif b"no-cache" in directives and cache_mode == "default":
                cache_mode = "no-cache"
    return RequestMeta(request_id or new_request_id(), deadline_ms, cache_mode)
