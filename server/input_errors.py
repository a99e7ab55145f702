"""What is wrong with a request body, in words: msgspec's messages rewritten to name the row,
the feature and the fix (``row 0: `amt`: unknown feature; did you mean `amount`?``).

Error paths only: nothing here runs for a request that decodes.
"""

from __future__ import annotations

import difflib
import re

import msgspec

from server.errors import InvalidInput
from server.modelcard import ModelCard

Number = float | None

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
    if not card.input.numeric_only:
        return "a number, a string, true/false or null"
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


def _object_row_key(body: bytes, row: int, typed: bool) -> str | None:
    """The first feature of object row ``row`` whose value is not a number or null (``typed``:
    not a number, string, boolean or null); an error path only: msgspec's path does not name
    the key of a bad dict value."""
    try:
        instances = msgspec.json.decode(body)["instances"]
        for key, value in instances[row].items():
            if typed:
                if isinstance(value, list | dict):
                    return str(key)
            elif not (
                value is None or (isinstance(value, int | float) and not isinstance(value, bool))
            ):
                return str(key)
    except (msgspec.DecodeError, RecursionError, LookupError, TypeError, AttributeError):
        pass
    return None


def explain_v1(
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
        values = "numbers" if card.input.numeric_only else "values"
        return InvalidInput(
            f"row {row_text} must be a list of {card.input.n_features} {values} or an object of "
            f"feature: value, got {_got(what) or what}"
        )
    if path.startswith(".instances") and len(index) == 2 and index[0].isdigit():
        row = int(index[0])
        if index[1].isdigit():
            feature = _feature(card, int(index[1]))
        else:
            key = _object_row_key(body, row, not card.input.numeric_only)
            feature = f"feature `{key}`" if key is not None else "a feature"
        return InvalidInput(f"row {row + first} {feature}: {_value_problem(what, card)}")
    return InvalidInput(f"invalid request body: {what} at `{path or '$'}`")


def explain_v2(exc: msgspec.ValidationError, card: ModelCard) -> InvalidInput:
    """msgspec's message on a /v2 body; a bad value in ``data`` is named by row and feature."""
    text = str(exc)
    found = _AT.match(text)
    if found is None:
        return InvalidInput(f"invalid request body: {text}")
    what, path = found.group("what"), found.group("path")
    data = re.fullmatch(r"\.inputs\[\d+\]\.data((?:\[\d+\]){1,2})", path)
    if data is not None:
        return data_problem(what, [int(i) for i in _INDEX.findall(data.group(1))], card)
    return InvalidInput(f"invalid request body: {what} at `{path or '$'}`")


def data_problem(what: str, index: list[int], card: ModelCard) -> InvalidInput:
    """A bad value at ``data[k]`` (flat, row-major) or ``data[row][column]`` (nested)."""
    if len(index) == 1:
        row, column = divmod(index[0], card.input.n_features)
    else:
        row, column = index
    where = "`data" + "".join(f"[{i}]" for i in index) + f"` (row {row} {_feature(card, column)})"
    if _got(what) == "an array":
        return InvalidInput(f"{where}: nested deeper than [rows, features]")
    return InvalidInput(f"{where}: {_value_problem(what, card)}")


def names_problem(i: int, row: dict[str, Number], names: list[str], wanted: set[str]) -> str:
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


def slice_problem(exc: msgspec.MsgspecError, card: ModelCard, offset: int) -> InvalidInput:
    """A bad value in a slice of ``data`` that starts at ``data[offset]``: named by its index in
    the whole ``data``."""
    found = _AT.match(str(exc)) if isinstance(exc, msgspec.ValidationError) else None
    if found is None:
        return InvalidInput(f"`data` is not an array of numbers: {exc}")
    index = [int(i) for i in _INDEX.findall(found.group("path")) if i.isdigit()]
    if not index:
        return InvalidInput(f"invalid request body: {exc}")
    index[0] += offset
    return data_problem(found.group("what"), index[:2], card)
