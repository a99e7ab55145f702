"""A model's tensors as the Open Inference Protocol states them, and requests checked against them.

Inputs, by the model's columns (``card.input``):

- every column numeric, one ``matrix`` input (today's models): one input named as in the card
  (``input``), FP32 ``[-1, n_columns]``;
- otherwise (typed columns: strings, booleans, categories) one input per column, named as the
  column, shape ``[-1, 1]`` (``[-1]`` is taken too), as the protocol's pandas convention and
  MLServer's ``PandasCodec`` send a table: FP32 for a numeric column, BOOL for a boolean one,
  BYTES for string categories, INT64 for int categories. A numeric column also takes the other
  number datatypes (``PandasCodec`` sends FP64 and INT64), a boolean one numbers 0 and 1, an int
  category any number datatype whose values are whole numbers. Each column's values become the
  row matrix through :class:`server.columns.Codec` (``server.oip.typed``).

Outputs, by task: a classifier gives ``probabilities`` FP32 ``[-1, n_classes]`` and ``label``
(INT64 for int classes, BYTES for string classes: the user's own labels) ``[-1]``; a regressor
gives ``value`` FP32 ``[-1]`` (one value per row, as ``label`` is one per row).

The model metadata (REST and gRPC) states exactly these, and requests are held to them: an unknown
(with the closest name suggested), repeated or missing input, another datatype or shape, row
counts that differ across inputs, or an output the model does not give is an
:class:`InvalidInput` that names it (too many rows: :class:`PayloadTooLarge`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, NamedTuple

import numpy as np

from server.errors import InvalidInput, PayloadTooLarge
from server.front_rules import first_bad_value, labels_for
from server.modelcard import Column, ModelCard

INPUT_DATATYPE = "FP32"
"""The datatype of a one-tensor model's input (every column numeric)."""
CLASSIFIER_OUTPUTS = ("probabilities", "label")
REGRESSOR_OUTPUTS = ("value",)
PLATFORM = "onnxruntime_onnx"

SERVER_NAME = "tabserve"
EXTENSIONS = ("binary_tensor_data",)
"""Protocol extensions stated in the server metadata (REST binary tensors, server.oip.binary)."""

INTEGERS = frozenset(["INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"])
NUMBERS = INTEGERS | {"FP16", "FP32", "FP64"}
SHOWN_INPUTS = 6
"""How many of the model's inputs an error message lists."""


def server_version() -> str:
    try:
        return metadata.version("tabserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Tensor(NamedTuple):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class Output(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


# --- inputs --------------------------------------------------------------------------------------


def per_column(card: ModelCard) -> bool:
    """True when the model takes one input per column (typed columns); False for one FP32
    matrix (every column numeric, ``matrix`` layout)."""
    spec = card.input
    return spec.layout != "matrix" or not spec.numeric_only


def column_datatype(column: Column) -> str:
    """The datatype the metadata states for ``column``'s input."""
    if column.kind == "numeric":
        return "FP32"
    if column.kind == "boolean":
        return "BOOL"
    return "BYTES" if isinstance(column.categories[0], str) else "INT64"


def accepted_datatypes(column: Column) -> frozenset[str]:
    """The datatypes ``column``'s input is taken in (the stated one first among equals)."""
    stated = column_datatype(column)
    if stated == "BYTES":
        return frozenset(["BYTES"])
    if stated == "BOOL":
        return NUMBERS | {"BOOL"}
    return NUMBERS


def model_inputs(card: ModelCard) -> list[Tensor]:
    if not per_column(card):
        return [Tensor(card.input.name, INPUT_DATATYPE, [-1, card.input.n_features])]
    return [Tensor(c.name, column_datatype(c), [-1, 1]) for c in card.input.columns]


def _declared(card: ModelCard) -> str:
    return f"{card.input.name!r} ({INPUT_DATATYPE} [-1, {card.input.n_features}])"


def check_inputs(card: ModelCard, inputs: Sequence[Tensor], max_rows: int) -> int:
    """The index in ``inputs`` of a one-tensor model's input, once every input's name, datatype
    and shape agree with the model's metadata (``shape[0]``: 1 to ``max_rows`` rows)."""
    wanted = card.input.name
    found = -1
    for i, tensor in enumerate(inputs):
        if tensor.name != wanted:
            raise InvalidInput(
                f"model {card.name} has no input {tensor.name!r}; its input is {_declared(card)}"
            )
        if found >= 0:
            raise InvalidInput(f"input {wanted!r} is given more than once")
        found = i
    if found < 0:
        raise InvalidInput(f"input {_declared(card)} is missing")
    tensor = inputs[found]
    if tensor.datatype != INPUT_DATATYPE:
        raise InvalidInput(
            f"input {wanted!r} is {INPUT_DATATYPE} (see the model's metadata), got "
            f"{tensor.datatype!r}"
        )
    shape, n_features = list(tensor.shape), card.input.n_features
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 0:
        raise InvalidInput(
            f"input {wanted!r} has shape [rows, {n_features}] (see the model's metadata), got "
            f"{shape}"
        )
    if shape[0] == 0:
        raise InvalidInput(f"input {wanted!r} has no rows (shape {shape})")
    if shape[0] > max_rows:
        raise PayloadTooLarge(f"{shape[0]} rows in one request; the limit is {max_rows}")
    return found


def names_columns(card: ModelCard, names: list[str]) -> bool:
    """A one-tensor model's request of inputs named as columns, not as the model's input: one
    input per column, as ``PandasCodec`` sends a table; decoded (and refused) per column too."""
    if not names or names[0] == card.input.name:
        return False
    return len(names) > 1 or names[0] in card.input.feature_names


def by_column(card: ModelCard, inputs: Sequence[Tensor]) -> bool:
    """The request is read one input per column: a typed model's, or a one-tensor model's whose
    inputs are named as its columns (checked off the usual path only)."""
    if per_column(card):
        return True
    if not inputs or inputs[0].name == card.input.name:
        return False
    return names_columns(card, [t.name for t in inputs])


def _inputs_text(card: ModelCard) -> str:
    shown = [f"`{c.name}` ({column_datatype(c)})" for c in card.input.columns[:SHOWN_INPUTS]]
    more = card.input.n_features - SHOWN_INPUTS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _unknown(card: ModelCard, name: str, missing: list[str]) -> str:
    close = difflib.get_close_matches(name, missing or card.input.feature_names, n=1, cutoff=0.6)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return (
        f"input `{name}`: unknown{hint} (model {card.name} takes one input per column: "
        f"{_inputs_text(card)})"
    )


def match_columns(
    card: ModelCard, inputs: Sequence[Tensor], max_rows: int
) -> tuple[list[int], int]:
    """Per column, the index of its input in ``inputs``, and the number of rows, once every
    input is a column of the model (named once) with a datatype the column takes and a shape
    ``[rows]`` or ``[rows, 1]``, all with the same number of rows (1 to ``max_rows``)."""
    columns = card.input.columns
    index = {c.name: j for j, c in enumerate(columns)}
    where = [-1] * len(columns)
    for i, tensor in enumerate(inputs):
        j = index.get(tensor.name, -1)
        if j < 0:
            missing = [c.name for c, w in zip(columns, where, strict=True) if w < 0]
            raise InvalidInput(_unknown(card, tensor.name, missing))
        if where[j] >= 0:
            raise InvalidInput(f"input `{tensor.name}` is given more than once")
        where[j] = i
    absent = [c.name for c, w in zip(columns, where, strict=True) if w < 0]
    if absent:
        shown = ", ".join(f"`{n}`" for n in absent[:10])
        more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
        verb = "is" if len(absent) == 1 else "are"
        raise InvalidInput(
            f"input {shown}{more} {verb} missing: model {card.name} takes one input per column "
            f"({_inputs_text(card)})"
        )
    rows = -1
    for column, i in zip(columns, where, strict=True):
        tensor = inputs[i]
        if tensor.datatype not in accepted_datatypes(column):
            raise InvalidInput(_datatype_problem(column, tensor.datatype))
        shape = list(tensor.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
            raise InvalidInput(
                f"input `{column.name}` has shape [rows] or [rows, 1] (one value per row), got "
                f"{shape}"
            )
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            first = inputs[where[0]]
            raise InvalidInput(
                f"input `{column.name}` has {shape[0]} rows, input `{first.name}` has {rows}: "
                "every input holds one value per row"
            )
    if rows == 0:
        raise InvalidInput("no rows to score: the inputs' shapes say 0 rows")
    if rows > max_rows:
        raise PayloadTooLarge(f"{rows} rows in one request; the limit is {max_rows}")
    return where, rows


def _datatype_problem(column: Column, datatype: str) -> str:
    stated = column_datatype(column)
    if stated == "BYTES":
        what = "takes strings: datatype BYTES"
    elif stated == "INT64":
        what = "takes whole numbers: datatype INT64 (or another number datatype)"
    elif stated == "BOOL":
        what = "takes true or false: datatype BOOL (or numbers 0 and 1)"
    else:
        what = "takes numbers: datatype FP32 (FP64, INT64 and the other number datatypes too)"
    return f"input `{column.name}` {what}, got {datatype!r}"


def check_values(rows: np.ndarray, card: ModelCard) -> np.ndarray:
    """``rows`` when every value is finite (NaN too, for models that allow missing values)."""
    bad = first_bad_value(rows, card.input.allow_missing)
    if bad is None:
        return rows
    r, c = bad
    what = "infinite" if card.input.allow_missing else "missing (NaN) or infinite"
    raise InvalidInput(
        f"row {r} feature {card.input.feature_names[c]!r} is {what}"
        + ("" if card.input.allow_missing else f"; model {card.name} needs every value")
    )


# --- outputs -------------------------------------------------------------------------------------


def output_names(card: ModelCard) -> tuple[str, ...]:
    return REGRESSOR_OUTPUTS if card.task == "regression" else CLASSIFIER_OUTPUTS


def label_datatype(card: ModelCard) -> str:
    return "BYTES" if card.classes and isinstance(card.classes[0], str) else "INT64"


def model_outputs(card: ModelCard) -> list[Tensor]:
    if card.task == "regression":
        return [Tensor("value", "FP32", [-1])]
    return [
        Tensor("probabilities", "FP32", [-1, len(card.classes)]),
        Tensor("label", label_datatype(card), [-1]),
    ]


def check_outputs(card: ModelCard, names: Iterable[str]) -> tuple[str, ...]:
    """The requested outputs, in order, when the model gives every one (none: all of them)."""
    given = output_names(card)
    wanted = tuple(names)
    if not wanted:
        return given
    unknown = [name for name in wanted if name not in given]
    if unknown:
        raise InvalidInput(
            f"model {card.name} has no output {unknown[0]!r}; its outputs are {list(given)}"
        )
    return wanted


def labels(card: ModelCard, scores: np.ndarray) -> list[Any]:
    """The ``label`` output, as ``/v1`` answers it (one rule: ``server.front_rules.labels_for``)."""
    return list(labels_for(scores.tolist(), card))


def outputs(card: ModelCard, scores: np.ndarray, wanted: Sequence[str]) -> list[Output]:
    """The requested output tensors for ``scores`` (float32 [n, card.n_outputs])."""
    n = len(scores)
    out: list[Output] = []
    for name in wanted:
        if name == "probabilities":
            out.append(Output(name, "FP32", [n, scores.shape[1]], scores))
        elif name == "value":
            out.append(Output(name, "FP32", [n], np.ascontiguousarray(scores[:, 0])))
        elif label_datatype(card) == "BYTES":
            out.append(Output(name, "BYTES", [n], np.array(labels(card, scores), dtype=object)))
        else:
            out.append(Output(name, "INT64", [n], np.asarray(labels(card, scores), np.int64)))
    return out
