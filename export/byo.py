"""Bring your own model: a saved scikit-learn estimator/Pipeline (joblib) or XGBoost model file
(JSON/UBJ) plus a CSV of labelled hold-out rows becomes a repository entry like the bundled ones.

The model says what it is (:func:`inspect_model`): the task (a classifier's classes, or a
regressor), and its input columns, typed:

- scikit-learn: the columns it was fitted on (``feature_names_in_``, else the CSV's order); a
  column that a ColumnTransformer sends to a ``OneHotEncoder``/``OrdinalEncoder`` (or any step
  with ``categories_``) is categorical with the encoder's categories, strings (ONNX ``string``
  input) or ints (``int64``; whole-number floats too, as ints of a ``float32`` input); every
  other column is numeric. A model with a categorical column is converted with one ONNX input
  per column (layout ``columns``); an all-numeric one takes one matrix (layout ``matrix``), as
  before.
- XGBoost: feature type ``c`` is categorical with the categories the model records (XGBoost
  3.1+ saves them with the model) or, for a model trained on codes, those given with
  ``categories`` in code order; ``i`` is boolean; the rest numeric. Always layout ``matrix`` with
  category codes.

The CSV is read per column as that type: numbers, true/false, or raw category values mapped to
codes by :class:`server.columns.Codec` (the server's own mapping). A categorical column whose
values mostly are not the model's categories (codes where raw values belong, or the wrong
column) is refused: never a silent mismatch.

There are no training rows, so the hold-out CSV is split in half (stratified by class for a
classifier): the validation half chooses the binary threshold and provides the drift reference,
the test half gives the metrics and the parity check and becomes holdout.npz. Loading a joblib
file runs arbitrary code from it: convert only files you trust.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from export.build import library_versions, pipeline_source_hash
from export.onnx_export import estimator_name
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import Progress, quiet
from export.repository import latest_card
from export.splits import holdout_halves
from server.columns import UNSEEN, UNSEEN_TEXT, Codec, describe
from server.errors import ExportError, InvalidInput, UnsupportedEstimator
from server.modelcard import NAME_PATTERN, Column, DatasetInfo, InputSpec, Label, ModelCard, Task

XGBOOST_SUFFIXES = (".json", ".ubj")
CLASSIFIER_OBJECTIVES = {"binary:logistic", "binary:logitraw", "multi:softprob", "multi:softmax"}
REGRESSOR_OBJECTIVES = {
    "reg:squarederror",
    "reg:squaredlogerror",
    "reg:pseudohubererror",
    "reg:absoluteerror",
    "reg:gamma",
    "reg:tweedie",
    "count:poisson",
}
POSITIVE_WORDS = {"1", "true", "yes", "y", "positive", "pos"}
NEGATIVE_WORDS = {"0", "false", "no", "n", "negative", "neg"}
"""A binary classifier's positive class is obvious when one class reads as a word of the first
set and the other as one of the second (case-insensitive): 0/1, False/True, "No"/"Yes", ...;
otherwise ``--positive-class`` must say it."""
TRUE_WORDS = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
TRAP_SHARE = 0.5
"""A categorical hold-out column with more than this share of its values outside the model's
categories does not hold the model's categories at all (codes, or another column): refused."""
NATIVE_UNSEEN_TEXT = "tabserve: a value outside the categories"
"""What the native model gets for an unseen string category at the parity probe."""

Categories = dict[str, list[Label]]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model says about itself."""

    model: Any
    framework: str
    task: Task
    classes: list[Any]
    """The model's own class values (``classes_``), in the order of its probability columns."""
    columns: list[Column] | None
    """Typed input columns in the model's order; None when the model does not know its column
    names (the CSV's order is then used, every column numeric)."""
    n_features: int | None
    recorded_categories: bool = False
    """XGBoost: the model carries its categories (native input: a DataFrame of raw values)."""
    cause_if_parity_fails: str = ""


@dataclass(frozen=True)
class Holdout:
    X: NDArray[np.float32]
    """The row matrix: numbers, booleans as 0/1, category codes."""
    y: NDArray[Any]
    """Class index into ``classes`` (int64) or the regression target (float64)."""
    columns: list[Column]
    classes: list[Label]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class ConvertResult:
    card: ModelCard
    published: bool
    """False when the same model file and CSV were already the latest version."""


# --- loading the model ------------------------------------------------------------------------


def load_model(path: Path) -> tuple[Any, str]:
    """Load a model file; return it with its framework ('sklearn' or 'xgboost').

    ``.json``/``.ubj`` files are read by XGBoost (no code runs); anything else by joblib, which
    executes code stored in the file.
    """
    _require_file(path, "model file")
    if path.suffix.lower() in XGBOOST_SUFFIXES:
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            reason = str(exc).strip().splitlines()[0]  # XGBoost appends a native stack trace
            raise ExportError(f"{path}: not a readable XGBoost model ({reason})") from exc
        return _xgb_model(booster, path.name), "xgboost"
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # whatever unpickling raises: the file is not a saved model
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise ExportError(f"{path}: not a readable joblib model file ({reason})") from exc
    return _check_loaded(model, path.name)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ExportError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ExportError(f"{what} {path} is not a file")


def _check_loaded(model: Any, origin: str) -> tuple[Any, str]:
    import xgboost as xgb
    from sklearn.base import is_classifier, is_regressor

    if isinstance(model, xgb.Booster):
        return _xgb_model(model, origin), "xgboost"
    if isinstance(model, (xgb.XGBClassifier, xgb.XGBRegressor)):
        _xgb_objective(model.get_booster(), origin)
        return model, "xgboost"
    if is_classifier(model) and hasattr(model, "predict_proba"):
        return model, "sklearn"
    if is_regressor(model) and hasattr(model, "predict"):
        return model, "sklearn"
    raise UnsupportedEstimator(
        f"{origin}: {estimator_name(model)} is neither a classifier with predict_proba nor a "
        "regressor; tabserve exports classifiers and regressors"
    )


def _xgb_objective(booster: Any, origin: str) -> str:
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    if objective not in CLASSIFIER_OBJECTIVES | REGRESSOR_OBJECTIVES:
        raise UnsupportedEstimator(
            f"{origin}: XGBoost objective {objective!r} is not supported; tabserve converts "
            "binary:logistic, multi:softprob, multi:softmax, reg:squarederror, "
            "reg:squaredlogerror, reg:pseudohubererror, reg:absoluteerror, reg:gamma, "
            "reg:tweedie and count:poisson"
        )
    targets = int(config["learner"]["learner_model_param"].get("num_target", "1"))
    if targets > 1:
        raise UnsupportedEstimator(f"{origin}: XGBoost model with {targets} targets")
    return objective


def _xgb_model(booster: Any, origin: str) -> Any:
    import xgboost as xgb

    objective = _xgb_objective(booster, origin)
    model = xgb.XGBClassifier() if objective in CLASSIFIER_OBJECTIVES else xgb.XGBRegressor()
    model.load_model(bytearray(booster.save_raw("json")))
    return model


def inspect_model(model: Any, framework: str, categories: Categories | None = None) -> ModelInfo:
    """The task, classes and typed columns of a loaded model."""
    from sklearn.base import is_classifier

    classifier = is_classifier(model)
    classes = list(getattr(model, "classes_", [])) if classifier else []
    if classifier and len(classes) < 2:
        raise UnsupportedEstimator(
            f"{estimator_name(model)} was fitted on {len(classes)} class(es); a classifier "
            "needs at least two"
        )
    task: Task = "regression" if not classifier else "binary" if len(classes) == 2 else "multiclass"
    if framework == "xgboost":
        return _inspect_xgboost(model, task, classes, categories or {})
    if categories:
        raise ExportError(
            "--categories is for XGBoost models with native categorical features; a "
            "scikit-learn model's categories come from its fitted encoders"
        )
    n = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    cause = _hgb_categorical_cause(model)
    encoded = _encoder_categories(model, None if names is None else [str(x) for x in names])
    if names is None:
        if encoded:
            raise ExportError(
                f"{estimator_name(model)} was fitted without column names and has categorical "
                "columns; fit it on a pandas DataFrame so its columns have names"
            )
        return ModelInfo(model, framework, task, classes, None, n, cause_if_parity_fails=cause)
    columns = [_encoded_column(str(name), encoded.get(str(name))) for name in names]
    return ModelInfo(model, framework, task, classes, columns, len(columns), False, cause)


def _encoded_column(name: str, categories: list[Any] | None) -> Column:
    """A column an encoder with ``categories`` (or none) reads."""
    if categories is None:
        return Column(name=name)
    values = [c for c in categories if not _is_missing(c)]
    if values and all(isinstance(v, str) for v in values):
        return Column(name=name, kind="categorical", categories=list(values), dtype="string")
    if values and all(_is_whole(v) for v in values):
        ints: list[Label] = [int(v) for v in values]
        return Column(name=name, kind="categorical", categories=ints, dtype="int64")
    if values and all(_is_whole_float(v) for v in values):
        # an encoder fitted on whole-number floats (an int column with NaN, read by pandas):
        # the ONNX graph casts its float input to int64 for the encoder, so 2.5 would be served
        # as category 2 (and an unknown value fail inside ONNX Runtime where the encoder
        # refuses them): typed as int categories of a float32 input, the server refuses 2.5 and
        # serves or refuses unknown values as the native encoder does
        wholes: list[Label] = [int(v) for v in values]
        return Column(name=name, kind="categorical", categories=wholes, dtype="float32")
    if values and all(isinstance(v, (int, float, np.number)) for v in values):
        return Column(name=name)  # float categories: the encoder in the graph reads the number
    raise ExportError(
        f"column {name!r}: its encoder's categories {values[:5]} are neither all strings nor all "
        "numbers; tabserve cannot type the column"
    )


def _is_whole_float(value: Any) -> bool:
    """A float that is a whole number float32 holds exactly."""
    if not isinstance(value, (float, np.floating)):
        return False
    number = float(value)
    return number.is_integer() and abs(number) <= 2.0**24


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _is_whole(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer))


def _encoder_categories(model: Any, names: list[str] | None) -> dict[str, list[Any]]:
    """Column name → categories of the encoder a ColumnTransformer sends it to."""
    from sklearn.compose import ColumnTransformer

    found: dict[str, list[Any]] = {}
    if names is None:
        return found
    steps = getattr(model, "steps", None)
    first = _first_encoder(steps[0][1]) if steps else None
    if first is not None and len(first.categories_) == len(names):
        # a pipeline that encodes every column first (no ColumnTransformer)
        return {
            n: list(np.asarray(v).tolist()) for n, v in zip(names, first.categories_, strict=True)
        }
    for step in _nested(model):
        ct_names = getattr(step, "feature_names_in_", None)
        if not isinstance(step, ColumnTransformer) or ct_names is None:
            continue
        if [str(n) for n in ct_names] != names:
            continue  # a ColumnTransformer after other steps reads their output, not the CSV's
        indices: dict[str, list[int]] = getattr(step, "_transformer_to_input_indices", {})
        for group, transformer, _ in step.transformers_:
            if isinstance(transformer, str):
                continue
            encoder = _first_encoder(transformer)
            if encoder is None:
                continue
            cats = list(encoder.categories_)
            columns = [names[i] for i in indices.get(group, [])]
            if len(cats) != len(columns):
                raise ExportError(
                    f"ColumnTransformer group {group!r}: {len(columns)} columns but its encoder "
                    f"has categories for {len(cats)}"
                )
            for column, values in zip(columns, cats, strict=True):
                found[column] = list(np.asarray(values).tolist())
    return found


def _nested(model: Any) -> list[Any]:
    found = [model]
    for _, step in getattr(model, "steps", []):
        found.extend(_nested(step))
    for _, transformer, _ in getattr(model, "transformers_", []):
        if not isinstance(transformer, str):
            found.extend(_nested(transformer))
    return found


def _first_encoder(transformer: Any) -> Any:
    """The first step of ``transformer`` with fitted ``categories_`` (None when it has none)."""
    if hasattr(transformer, "categories_"):
        return transformer
    for _, step in getattr(transformer, "steps", []):
        if hasattr(step, "categories_"):
            return step
    return None


def _hgb_categorical_cause(model: Any) -> str:
    """Names the categorical features of a HistGradientBoosting model: skl2onnx 1.20 converts
    their category splits as numeric thresholds (parity fails on them), and cannot convert the
    category encoding such a model does itself for string columns (refused here)."""
    for step in _nested(model):
        flags = getattr(step, "is_categorical_", None)
        if flags is None or not np.any(flags):
            continue
        names = getattr(step, "feature_names_in_", None)
        cats = [
            str(names[i]) if names is not None else f"#{i}"
            for i in np.flatnonzero(np.asarray(flags))
        ]
        what = type(step).__name__
        if _encodes_text(getattr(step, "_preprocessor", None)):
            raise UnsupportedEstimator(
                f"{what} has categorical features {cats} of strings that it encodes itself: "
                "the ONNX converter (skl2onnx) cannot convert that; "
                "one-hot or ordinal encode them in a ColumnTransformer instead"
            )
        return (
            f" — the cause: {what} has categorical features {cats}, whose category splits the "
            "ONNX converter (skl2onnx) does not reproduce; train it without "
            "categorical_features (e.g. one-hot encode them) to convert it"
        )
    return ""


def _encodes_text(preprocessor: Any) -> bool:
    """True when a HistGradientBoosting model's own category encoder was fitted on strings."""
    for _, transformer, _ in getattr(preprocessor, "transformers_", []):
        for values in getattr(transformer, "categories_", []):
            if any(isinstance(v, str) for v in np.asarray(values).tolist()):
                return True
    return False


def _inspect_xgboost(model: Any, task: Task, classes: list[Any], given: Categories) -> ModelInfo:
    booster = model.get_booster()
    names = booster.feature_names
    types = booster.feature_types or ["float"] * booster.num_features()
    recorded = _xgb_recorded_categories(booster)
    n = booster.num_features()
    labels = [str(x) for x in names] if names is not None else [f"f{i}" for i in range(n)]
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ExportError(f"--categories names column(s) {unknown} the model does not have")
    columns: list[Column] = []
    for j, (name, kind) in enumerate(zip(labels, types, strict=True)):
        if kind == "c":
            cats = recorded.get(j)
            option = given.get(name)
            if cats is not None and option is not None and list(option) != list(cats):
                raise ExportError(
                    f"column {name!r}: the model records the categories {cats[:8]}, "
                    f"--categories gives {option[:8]}"
                )
            cats = cats if cats is not None else option
            if cats is None:
                raise ExportError(
                    f"column {name!r} is a categorical feature of the XGBoost model, which does "
                    f"not record its categories (it was trained on codes); give them in code "
                    f"order with --categories {name}=VALUE0,VALUE1,..."
                )
            text = all(isinstance(c, str) for c in cats)
            columns.append(Column(name=name, kind="categorical", categories=list(cats)))
            if not text and not all(isinstance(c, int) for c in cats):
                raise ExportError(f"column {name!r}: categories must be all strings or all ints")
        elif given.get(name) is not None:
            raise ExportError(f"--categories: column {name!r} is not a categorical feature")
        elif kind == "i":
            columns.append(Column(name=name, kind="boolean"))
        else:
            columns.append(Column(name=name))
    known = names is not None or any(c.kind != "numeric" for c in columns)
    return ModelInfo(
        model,
        "xgboost",
        task,
        classes,
        columns if known else None,
        n,
        recorded_categories=bool(recorded),
    )


def _xgb_recorded_categories(booster: Any) -> dict[int, list[Label]]:
    """Feature index → categories, as XGBoost 3.1+ saves them in the model (``cats``)."""
    doc = json.loads(booster.save_raw("json"))
    cats = doc["learner"]["gradient_booster"]["model"].get("cats") or {}
    types = booster.feature_types or []
    found: dict[int, list[Label]] = {}
    for j, enc in enumerate(cats.get("enc") or []):
        if j >= len(types) or types[j] != "c":
            continue
        values = enc.get("values") or []
        if "offsets" in enc:
            offsets = enc["offsets"]
            if len(offsets) < 2:
                continue
            raw = bytes(values)
            found[j] = [raw[a:b].decode("utf-8") for a, b in pairwise(offsets)]
        elif values:
            if not all(float(v).is_integer() for v in values):
                raise ExportError(
                    f"feature #{j}: the model's categories {values[:5]} are not whole numbers"
                )
            found[j] = [int(v) for v in values]
    return found


# --- reading the hold-out CSV -----------------------------------------------------------------


def _read_table(path: Path, label_column: str) -> tuple[list[str], list[list[str]]]:
    _require_file(path, "hold-out CSV")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ExportError(f"{path}: empty CSV") from None
            if label_column not in header:
                raise ExportError(f"{path}: no label column {label_column!r} in header {header}")
            rows = [list(row) for row in reader if row]  # cells as written: see read_holdout
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    except csv.Error as exc:
        raise ExportError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise ExportError(f"{path}: no data rows")
    for i, row in enumerate(rows, 1):
        if len(row) != len(header):
            raise ExportError(
                f"{path}: data row {i} has {len(row)} cells, the header {len(header)}"
            )
    if len(set(header)) != len(header):
        raise ExportError(f"{path}: the header repeats a column name")
    return header, rows


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _typed_columns(
    path: Path, info: ModelInfo, header: list[str], table: dict[str, list[str]]
) -> list[Column]:
    """The model's columns (or the CSV's, all numeric), with booleans found in the CSV."""
    features = header
    if info.columns is None:
        n = info.n_features
        if n is not None and n != len(features):
            raise ExportError(f"the model takes {n} features, the CSV has {len(features)}")
        columns = [Column(name=h) for h in features]
    else:
        missing = [c.name for c in info.columns if c.name not in table]
        if missing:
            raise ExportError(f"{path}: the CSV lacks the model's column(s) {missing}")
        columns = list(info.columns)
    typed: list[Column] = []
    for column in columns:
        cells = [c for c in table[column.name] if c]
        if (
            column.kind == "numeric"
            and cells
            and all(c.lower() in ("true", "false") for c in cells)
        ):
            column = replace_column(column, kind="boolean")
        typed.append(column)
    return typed


def replace_column(column: Column, **changes: Any) -> Column:
    import msgspec

    return msgspec.structs.replace(column, **changes)


def _cell_value(path: Path, column: Column, cell: str, row: int) -> object:
    """One CSV cell as the raw value the Codec takes for ``column``."""
    if not cell:
        if column.dtype != "float32":
            # a string or int64 ONNX input has no missing value (nor does the server take one)
            raise ExportError(
                f"{path}: row {row} column {column.name!r} is empty, but the model reads the "
                f"column as {'strings' if column.dtype == 'string' else 'whole numbers'} (one "
                "ONNX input per column), which have no missing value; fill the cell with one "
                "of its categories or drop the row"
            )
        return None
    if column.kind == "categorical":
        if isinstance(column.categories[0], str):
            return cell
        number = _number(cell)
        if number is None or not number.is_integer():
            raise ExportError(
                f"{path}: row {row} column {column.name!r} takes a whole-number category, got "
                f"{describe(cell)}"
            )
        return int(number)
    if column.kind == "boolean":
        flag = TRUE_WORDS.get(cell.lower())
        if flag is None:
            raise ExportError(
                f"{path}: row {row} column {column.name!r} takes true or false, got "
                f"{describe(cell)}"
            )
        return flag
    number = _number(cell)
    if number is None:
        raise ExportError(_not_a_number(path, column, cell, row))
    return number


def _not_a_number(path: Path, column: Column, cell: str, row: int) -> str:
    return (
        f"{path}: row {row} column {column.name!r} takes a number (the model has no categories "
        f"for it), got {describe(cell)}"
    )


def _check_column_types(path: Path, columns: list[Column], table: dict[str, list[str]]) -> None:
    """A numeric column holding text: all text (no categories known) or mixed types."""
    for column in columns:
        if column.kind != "numeric":
            continue
        cells = table[column.name]
        text = [(i, c) for i, c in enumerate(cells, 1) if c and _number(c) is None]
        if not text:
            continue
        row, cell = text[0]
        if len(text) < sum(1 for c in cells if c):
            raise ExportError(
                f"{path}: column {column.name!r} mixes numbers and text (row {row} holds "
                f"{describe(cell)}); it takes numbers"
            )
        raise ExportError(
            f"{path}: column {column.name!r} holds text (row {row}: {describe(cell)}) but the "
            "model has no categories for it (no fitted OneHotEncoder/OrdinalEncoder with "
            "categories_ reads it); tabserve needs every text column's known categories"
        )


def read_holdout(
    path: Path,
    label_column: str,
    info: ModelInfo | None = None,
    positive_class: str | None = None,
) -> Holdout:
    """Read a CSV with a header row: every column the model takes, typed as the model types it,
    mapped to the row matrix by the server's :class:`Codec`; the label column as class indices
    (or a regression target). Empty cells are missing values. Cells are read without the
    spaces around them, except where a string category or class is spelled with them (UCI
    Adult's " Private", " >50K" as ``pandas.read_csv`` reads them)."""
    header, rows = _read_table(path, label_column)
    label_at = header.index(label_column)
    written = {h: [row[i] for row in rows] for i, h in enumerate(header) if i != label_at}
    table = {h: [cell.strip() for cell in cells] for h, cells in written.items()}
    if info is None:
        info = ModelInfo(None, "sklearn", "binary", [0, 1], None, None)
    columns = _typed_columns(path, info, [h for h in header if h != label_column], table)
    _check_column_types(path, columns, table)
    reading = InputSpec(
        columns=[
            replace_column(c, allow_missing=True, unknown="serve")
            if c.kind == "categorical"
            else replace_column(c, allow_missing=True)
            for c in columns
        ]
    )
    codec = Codec(reading)
    X = np.empty((len(rows), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        cells = table[column.name]
        if column.kind == "categorical" and isinstance(column.categories[0], str):
            known = set(column.categories)
            cells = [
                cell if cell in known else stripped
                for cell, stripped in zip(written[column.name], cells, strict=True)
            ]
        values = [_cell_value(path, column, cell, i) for i, cell in enumerate(cells, 1)]
        try:
            X[:, j] = codec.encode_column(j, values, first=1)
        except InvalidInput as exc:
            raise ExportError(f"{path}: {exc.detail}") from None
        if column.kind == "categorical":
            _check_trap(path, column, values, X[:, j])
    labels = [row[label_at] for row in rows]
    y, classes = _labels(path, label_column, labels, info)
    return Holdout(X, y, columns, classes)


def _check_trap(
    path: Path, column: Column, values: list[object], codes: NDArray[np.float32]
) -> None:
    """Refuse a column whose values mostly are not the model's categories."""
    present = ~np.isnan(codes)
    if not present.any():
        return
    unseen = codes[present] == UNSEEN
    share = float(unseen.mean())
    if share <= TRAP_SHARE:
        return
    examples: list[str] = []
    for value, code in zip(values, codes.tolist(), strict=True):
        text = describe(value)
        if code == UNSEEN and text not in examples:
            examples.append(text)
        if len(examples) == 3:
            break
    known = ", ".join(describe(c) for c in column.categories[:6])
    more = "" if len(column.categories) <= 6 else f" and {len(column.categories) - 6} more"
    raise ExportError(
        f"{path}: column {column.name!r}: {share:.0%} of its values (e.g. {', '.join(examples)}) "
        f"are not among the model's categories ({known}{more}); the CSV must hold the raw "
        "category values the model was trained on, not codes"
    )


def _class_keys(value: Any) -> list[str]:
    """The CSV spellings of one class value."""
    if isinstance(value, (bool, np.bool_)):
        return ["true", "1"] if value else ["false", "0"]
    if isinstance(value, (int, np.integer)):
        return [str(int(value)), f"{float(value)}"]
    if isinstance(value, (float, np.floating)):
        keys = [repr(float(value))]
        return [*keys, str(int(value))] if float(value).is_integer() else keys
    return [str(value)]


def card_label(value: Any) -> Label:
    """A class value as the card keeps it: an int or a string."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value)


def _labels(
    path: Path, label_column: str, cells: list[str], info: ModelInfo
) -> tuple[NDArray[Any], list[Label]]:
    if info.task == "regression":
        target = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells, 1):
            number = _number(cell) if cell.strip() else None
            if number is None or not math.isfinite(number):
                raise ExportError(
                    f"{path}: row {i} label column {label_column!r} holds {describe(cell)}; a "
                    "regressor's target must be a number"
                )
            target[i - 1] = number
        return target, []
    lookup: dict[str, int] = {}
    for index, value in enumerate(info.classes):
        for key in _class_keys(value):
            lookup.setdefault(key, index)
            lookup.setdefault(key.lower(), index)
    y = np.empty(len(cells), dtype=np.int64)
    for i, cell in enumerate(cells, 1):
        found = lookup.get(cell)
        if found is None:
            text = cell.strip()
            found = lookup.get(text, lookup.get(text.lower()))
        if found is None:
            raise ExportError(
                f"{path}: row {i} label {describe(cell)} in {label_column!r} is not one of the "
                f"model's classes {[card_label(c) for c in info.classes]}"
            )
        y[i - 1] = found
    return y, [card_label(c) for c in info.classes]


def choose_positive_class(classes: list[Label], given: str | None) -> Label:
    """The positive class of a binary classifier: ``given`` (matched to a class as the CSV
    spells it), else the obvious one (see :data:`POSITIVE_WORDS`)."""
    if given is not None:
        for value in classes:
            if given in _class_keys(value) or given.lower() in [
                k.lower() for k in _class_keys(value)
            ]:
                return value
        raise ExportError(f"--positive-class {given!r} is not one of the model's classes {classes}")
    words = [str(c).strip().lower() for c in classes]
    positive = [i for i, w in enumerate(words) if w in POSITIVE_WORDS]
    negative = [i for i, w in enumerate(words) if w in NEGATIVE_WORDS]
    if len(positive) == 1 and len(negative) == 1 and positive != negative:
        return classes[positive[0]]
    raise ExportError(
        f"the model's classes {classes} have no obvious positive class; say which one is with "
        "--positive-class"
    )


# --- the native model's input -----------------------------------------------------------------


def native_input(info: ModelInfo, spec: InputSpec) -> Any:
    """Row matrix → what the native model takes: raw values in a DataFrame when the model knows
    its column names (strings for string categories, an outside value where a category is
    unseen); category codes for an XGBoost model trained on codes; else the matrix."""
    codec = Codec(spec)
    named = getattr(info.model, "feature_names_in_", None) is not None
    categorical = any(c.kind == "categorical" for c in spec.columns)
    if info.framework == "xgboost":
        if info.recorded_categories:
            return _frame_maker(codec, xgb_categories=True)
        if categorical:
            return _codes_only(codec)
        return None
    if named:
        return _frame_maker(codec, xgb_categories=False)
    return None


def _frame_maker(codec: Codec, *, xgb_categories: bool) -> Any:
    import pandas as pd

    def make(X: NDArray[np.float32]) -> Any:
        data: dict[str, Any] = {}
        for j, column in enumerate(codec.columns):
            raw = codec.decode_column(j, X[:, j])
            if column.kind == "categorical":
                text = isinstance(column.categories[0], str)
                unseen = X[:, j] == UNSEEN
                values = np.array(raw, dtype=object)
                if text:
                    values[values == UNSEEN_TEXT] = NATIVE_UNSEEN_TEXT
                if xgb_categories:
                    extra = NATIVE_UNSEEN_TEXT if text else min(column.categories) - 1  # type: ignore[operator]
                    cats = [*column.categories, extra] if unseen.any() else column.categories
                    data[column.name] = pd.Categorical(values, categories=cats)
                elif text:
                    data[column.name] = values
                elif column.dtype == "float32":  # whole-number categories fitted as floats
                    data[column.name] = np.array(
                        [np.nan if v is None else float(v) for v in values.tolist()],
                        dtype=np.float64,
                    )
                else:
                    data[column.name] = values.astype(np.int64)
            elif column.kind == "boolean":
                data[column.name] = np.where(np.isnan(X[:, j]), np.nan, X[:, j] != 0)
            else:
                data[column.name] = np.asarray(X[:, j], dtype=np.float64)
        return pd.DataFrame(data)

    return make


def _codes_only(codec: Codec) -> Any:
    def codes(X: NDArray[np.float32]) -> NDArray[np.float32]:
        if (X[:, codec.categorical] == UNSEEN).any():
            raise ValueError("a category outside the ones the model was trained on")
        return X

    return codes


# --- convert ----------------------------------------------------------------------------------


def _fingerprint(model_path: Path, csv_path: Path, settings: dict[str, Any]) -> str:
    inputs = {
        "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "csv_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        **settings,
        "libraries": library_versions(),
        "pipeline_source": pipeline_source_hash(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def convert(
    model_path: Path,
    holdout_csv: Path,
    label_column: str,
    name: str,
    models_dir: Path,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    positive_class: str | None = None,
    task: Task | None = None,
    categories: Categories | None = None,
    cost_budget_s: float = 0.4,
    ladder: bool = False,
) -> ConvertResult:
    """Convert a saved model into a new version of ``name`` in ``models_dir``.

    ``task`` (optional) must agree with what the model is; ``positive_class`` names a binary
    classifier's positive class as the CSV spells it; ``categories`` gives an XGBoost model's
    categories (column → values in code order) when the model does not record them.
    ``ladder`` also exports the cheaper variants of an XGBoost model or a random forest
    (:mod:`export.ladder`).
    """
    progress = progress or quiet(name)
    if not NAME_PATTERN.match(name):
        raise ExportError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    _require_file(model_path, "model file")
    _require_file(holdout_csv, "hold-out CSV")
    settings = {
        "label_column": label_column,
        "seed": seed,
        "positive_class": positive_class,
        "task": task,
        "categories": categories or {},
    }
    if ladder:  # absent otherwise: a conversion without a ladder keeps its fingerprint
        settings["ladder"] = True
    fp = _fingerprint(model_path, holdout_csv, settings)
    latest = latest_card(models_dir, name)
    if latest is not None and latest.fingerprint == fp:
        progress.say(f"unchanged, version {latest.version} is current")
        return ConvertResult(latest, published=False)
    with progress.step(f"loading {model_path.name} and {holdout_csv.name}"):
        model, framework = load_model(model_path)
        info = inspect_model(model, framework, categories)
        _check_task(info, task, positive_class)
        holdout = read_holdout(holdout_csv, label_column, info)
    chosen: Label | None = None
    if info.task == "binary":
        chosen = choose_positive_class(holdout.classes, positive_class)
    val_idx, test_idx = _halves(holdout, info.task, seed, holdout_csv)
    validation = Rows(holdout.X[val_idx], holdout.y[val_idx])
    test = Rows(holdout.X[test_idx], holdout.y[test_idx])
    layout: Literal["matrix", "columns"] = (
        "columns"
        if framework == "sklearn" and any(c.kind == "categorical" for c in holdout.columns)
        else "matrix"
    )
    if framework == "xgboost":
        model.get_booster().feature_names = (
            holdout.feature_names if info.recorded_categories else None
        )
    spec = InputSpec(columns=holdout.columns, layout=layout)
    what = {"binary": "binary classifier", "multiclass": "multiclass classifier"}.get(
        info.task, "regressor"
    )
    candidate = Candidate(
        model=model,
        name=name,
        framework=framework,
        recipe="byo",
        description=f"bring-your-own {estimator_name(model)} ({what}) from {model_path.name}",
        columns=holdout.columns,
        reference=validation,
        validation=validation,
        test=test,
        dataset=DatasetInfo(
            name=holdout_csv.stem,
            rows_train=0,
            rows_validation=len(val_idx),
            rows_test=len(test_idx),
            positive_rate_train=(
                float(np.mean(validation.y == holdout.classes.index(chosen)))
                if chosen is not None
                else None
            ),
            seed=seed,
            source=(
                f"bring-your-own hold-out CSV {holdout_csv.name} ({len(holdout.y)} rows) split in "
                f"half{', stratified' if info.task != 'regression' else ''}: threshold and drift "
                "reference from the validation half (no training rows available; "
                "positive_rate_train is that half's), metrics and parity on the test half"
            ),
        ),
        fingerprint=fp,
        params={
            "model_file": model_path.name,
            "label_column": label_column,
            "positive_class": None if chosen is None else str(chosen),
        },
        threshold_rule="f1-optimal on the validation half of the hold-out CSV",
        task=info.task,
        classes=holdout.classes,
        positive_class=chosen,
        layout=layout,
        native_input=native_input(info, spec),
        cause_if_parity_fails=info.cause_if_parity_fails,
    )
    try:
        card = publish_candidate(
            candidate, models_dir, progress, seed=seed, cost_budget_s=cost_budget_s, ladder=ladder
        )
    except UnsupportedEstimator as exc:
        if info.cause_if_parity_fails:
            raise UnsupportedEstimator(exc.detail + info.cause_if_parity_fails) from exc
        raise
    return ConvertResult(card, published=True)


def _check_task(info: ModelInfo, task: Task | None, positive_class: str | None) -> None:
    what = (
        "a regressor"
        if info.task == "regression"
        else f"a {len(info.classes)}-class classifier ({info.task})"
    )
    if task is not None and task != info.task:
        raise ExportError(f"--task {task}: the model is {what}")
    if positive_class is not None and info.task != "binary":
        raise ExportError(f"--positive-class is for binary classifiers; the model is {what}")


def _halves(
    holdout: Holdout, task: Task, seed: int, path: Path
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    if task == "regression":
        if len(holdout.y) < 4:
            raise ExportError(f"{path}: need at least 4 rows to split in half")
        return holdout_halves(holdout.y, seed, stratify=False)
    counts = np.bincount(holdout.y, minlength=len(holdout.classes))
    few = [holdout.classes[i] for i, n in enumerate(counts) if n < 2]
    if few:
        raise ExportError(
            f"{path}: need at least 2 rows of each class to split in half; class(es) {few} "
            "have fewer"
        )
    return holdout_halves(holdout.y, seed)


__all__ = [
    "ConvertResult",
    "Holdout",
    "ModelInfo",
    "choose_positive_class",
    "convert",
    "inspect_model",
    "load_model",
    "read_holdout",
]
