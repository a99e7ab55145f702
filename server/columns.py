"""Typed columns in one place: raw values to the row matrix, and the row matrix to ONNX tensors.

The *row matrix* is how every row lives inside the server, whatever door it came in by: float32
``[n, n_columns]`` in the card's column order, with

- a numeric value as itself (NaN: missing);
- a boolean as 0.0 or 1.0;
- a categorical value as its index in the column's ``categories``; :data:`UNSEEN` (-1) for a value
  outside them (only where the column's ``unknown`` is ``serve``); NaN for missing.

Cache keys, micro-batching and drift monitoring work on it unchanged (a category is a number
there, and two spellings of one row are one key). Only :meth:`Codec.onnx_feeds` turns it into the
tensors the graph takes: the matrix itself for a ``matrix`` layout (an unseen category code
becomes NaN, where XGBoost sends a category it does not know), one ``[n, 1]`` tensor per column
for a ``columns`` layout, categories back as the strings (or ints, or whole-number floats) the
user's encoder was fitted on. The server never re-implements the user's preprocessing: ONNX
Runtime still sees the strings.

An unseen value of a string column reaches ONNX Runtime as :data:`UNSEEN_TEXT`, one string no
category equals: the encoders skl2onnx converts (``OneHotEncoder``, ``OrdinalEncoder``) answer
every unknown value the same way, and ``tabserve export`` checks that parity with the native
model on unseen values before it publishes (never a silent mismatch).

The exporter uses the same :class:`Codec` to read hold-out files, so training-time and
serve-time mapping cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from server.errors import InvalidInput
from server.modelcard import Column, InputSpec, Label

UNSEEN = -1.0
"""The code of a categorical value outside the column's known categories."""
UNSEEN_TEXT = "\x00unseen"
"""What a string column's unseen value becomes for ONNX Runtime."""
SHOWN_CATEGORIES = 8
"""How many known categories an error message lists."""


def describe(value: object) -> str:
    """A value as a message shows it: strings quoted (and cut), JSON's words for the rest."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return '"' + text.replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def known_categories(column: Column) -> str:
    cats = [describe(c) for c in column.categories[:SHOWN_CATEGORIES]]
    more = len(column.categories) - SHOWN_CATEGORIES
    return ", ".join(cats) + (f" and {more} more" if more > 0 else "")


class Codec:
    """The value rules of one model's input columns, precomputed once per model version."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.columns = spec.columns
        self.lookups: list[dict[Label | float, float] | None] = [
            _lookup(c) if c.kind == "categorical" else None for c in spec.columns
        ]
        """Per column: category → code (categorical), else None. An int category is found by
        its float too (JSON numbers decode as floats: ``{10: 0}.get(10.0)`` finds it)."""
        self.categorical = [j for j, c in enumerate(spec.columns) if c.kind == "categorical"]
        self.boolean = [j for j, c in enumerate(spec.columns) if c.kind == "boolean"]
        self._tables: list[np.ndarray | None] = [
            _table(c) if spec.layout == "columns" and _fed_as_values(c) else None
            for c in spec.columns
        ]
        """Per column of a ``columns`` layout: code → the value its ONNX input takes (the
        categories, and the unseen stand-in last); None where the row matrix's value is fed."""

    # --- raw values to codes ----------------------------------------------------------------

    def code(self, j: int, value: object, row: int = 0) -> float:
        """One raw value of column ``j`` as the row matrix holds it; :class:`InvalidInput`
        naming the row, the column and the value when the column cannot take it."""
        column = self.columns[j]
        if value is None:
            if column.allow_missing:
                return math.nan
            raise InvalidInput(
                f"row {row} column {column.name!r} is missing (null); the model needs a value"
            )
        lookup = self.lookups[j]
        if lookup is not None:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise InvalidInput(self._wrong_type(column, value, row))
            found = lookup.get(value)
            if found is not None:
                return found
            if isinstance(value, float) and not value.is_integer():
                raise InvalidInput(self._wrong_type(column, value, row))
            if isinstance(value, str) != isinstance(column.categories[0], str):
                raise InvalidInput(self._wrong_type(column, value, row))
            if column.unknown == "serve":
                return UNSEEN
            raise InvalidInput(
                f"row {row} column {column.name!r}: {describe(value)} is not a known category "
                f"(known: {known_categories(column)}); the model refuses unknown categories"
            )
        if column.kind == "boolean":
            if value is True or value is False:
                return 1.0 if value else 0.0
            if isinstance(value, (int, float)) and value in (0, 1):
                return float(value)
            raise InvalidInput(self._wrong_type(column, value, row))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(self._wrong_type(column, value, row))
        number = float(value)
        if math.isfinite(number) and abs(number) <= 3.4028234663852886e38:
            return number
        if math.isnan(number) and column.allow_missing:
            return math.nan
        raise InvalidInput(
            f"row {row} column {column.name!r} is {describe(value)}: infinite, NaN or out of "
            "float32 range"
        )

    def _wrong_type(self, column: Column, value: object, row: int) -> str:
        if column.kind == "categorical":
            what = "a string" if isinstance(column.categories[0], str) else "a whole number"
            return (
                f"row {row} column {column.name!r} takes a category ({what}, one of "
                f"{known_categories(column)}), got {describe(value)}"
            )
        if column.kind == "boolean":
            return f"row {row} column {column.name!r} takes true or false, got {describe(value)}"
        return f"row {row} column {column.name!r} takes a number, got {describe(value)}"

    def encode_column(self, j: int, values: Sequence[object], first: int = 0) -> np.ndarray:
        """Raw values of column ``j`` as float32 codes (``first``: the first value's row)."""
        code = self.code
        return np.array([code(j, v, i) for i, v in enumerate(values, first)], dtype=np.float32)

    # --- codes back to raw values -------------------------------------------------------------

    def decode_column(self, j: int, codes: np.ndarray) -> np.ndarray:
        """Codes of column ``j`` as raw values: numbers as float64 (NaN: missing), booleans
        as bool (missing: None in an object array), categories as an object array of the
        category values (``None`` for missing, :data:`UNSEEN_TEXT`/the int stand-in for unseen)."""
        column = self.columns[j]
        if column.kind == "numeric":
            return np.asarray(codes, dtype=np.float64)
        if column.kind == "boolean":
            if not np.isnan(codes).any():
                flags: np.ndarray = np.asarray(codes, dtype=np.float64) != 0.0
                return flags
            return np.array(
                [None if math.isnan(c) else bool(c) for c in codes.tolist()], dtype=object
            )
        table = [*column.categories, _unseen_value(column)]
        return np.array(
            [None if math.isnan(c) else table[int(c)] for c in codes.tolist()], dtype=object
        )

    # --- the row matrix to ONNX Runtime -------------------------------------------------------

    def onnx_feeds(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for float32 ``rows`` [n, n_columns] (the row matrix)."""
        spec = self.spec
        if spec.layout == "matrix":
            if not self.categorical:
                return {spec.name: rows}
            cats = rows[:, self.categorical]
            if not (cats == UNSEEN).any():
                return {spec.name: rows}
            fed = rows.copy()
            fed[:, self.categorical] = np.where(cats == UNSEEN, np.float32(np.nan), cats)
            return {spec.name: fed}
        feeds: dict[str, np.ndarray] = {}
        for j, column in enumerate(self.columns):
            table = self._tables[j]
            if table is None:
                feeds[column.name] = np.ascontiguousarray(rows[:, j : j + 1])
            else:
                # code -1 (unseen) indexes the table's last entry, the unseen stand-in
                codes = rows[:, j]
                missing = np.isnan(codes)
                if missing.any():  # a float32 category column that takes a missing value
                    values = table[np.where(missing, 0, codes).astype(np.intp)]
                    values[missing] = np.nan
                    feeds[column.name] = values.reshape(-1, 1)
                else:
                    feeds[column.name] = table[codes.astype(np.intp)].reshape(-1, 1)
        return feeds


def _fed_as_values(column: Column) -> bool:
    """A ``columns`` layout feeds this column's category values, not its codes: string and int64
    inputs, and int categories of a float32 input (an encoder fitted on whole-number floats)."""
    if column.dtype != "float32":
        return True
    return column.kind == "categorical" and not isinstance(column.categories[0], str)


def _lookup(column: Column) -> dict[Label | float, float]:
    return {value: float(i) for i, value in enumerate(column.categories)}


def _unseen_value(column: Column) -> Label:
    """The stand-in an unseen category becomes for ONNX Runtime: :data:`UNSEEN_TEXT` for
    strings, one less than the least known category for ints."""
    if isinstance(column.categories[0], str):
        return UNSEEN_TEXT
    return min(int(c) for c in column.categories) - 1


def _table(column: Column) -> np.ndarray:
    """Code → the value ONNX Runtime takes, with the unseen stand-in last (code -1)."""
    values = [*column.categories, _unseen_value(column)]
    if column.dtype == "string":
        return np.array([str(v) for v in values], dtype=object)
    if column.dtype == "float32":  # whole-number categories an encoder reads as floats
        return np.array(values, dtype=np.float32)
    return np.array(values, dtype=np.int64)
