"""model.json: the contract between ``export/`` (which writes it) and the server (which reads it).

Every model version in the repository is a folder ``models/<name>/<version>/`` holding
``model.onnx``, ``model.json`` (a :class:`ModelCard`) and optionally ``holdout.npz`` (the labelled
hold-out rows that the load tests replay). This module has no dependency on scikit-learn or
XGBoost; it is the single validator, used by the exporter before publishing and by the server's
registry before loading.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from server.errors import InvalidModelCard

SCHEMA_VERSION = 2
"""Version 1 (numeric binary classifiers, PR #1-11) still loads: :func:`migrate` turns it into
version 2 in memory when it is read; the folder on disk is left as it is."""
CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
HOLDOUT_FILE = "holdout.npz"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
VERSION_PATTERN = re.compile(r"[1-9][0-9]*")
"""A version folder's name: a positive integer in ASCII digits without leading zeros."""


Task = Literal["binary", "multiclass", "regression"]
Label = int | str
"""A class label as the user trained with it: an int or a string."""
ColumnKind = Literal["numeric", "boolean", "categorical"]


class Column(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One input column, typed.

    Inside the server every row is float32 in column order (the *row matrix*, see
    ``server.columns``): a numeric value as itself, a boolean as 0/1, a categorical value as its
    index in ``categories`` (-1 for a value outside them, NaN for missing). The cache keys, the
    batcher and the monitor work on that matrix; only the call into ONNX Runtime turns it back
    into the tensors the graph takes (``server.columns.onnx_feeds``).
    """

    name: str
    kind: ColumnKind = "numeric"
    categories: list[Label] = []
    """Categorical only: the known values, all ints or all strings, in the order the codes use
    (for an XGBoost model with native categories, the model's own order)."""
    allow_missing: bool = False
    """True when the model takes a missing value (null) here (NaN to ONNX Runtime)."""
    unknown: Literal["refuse", "serve"] = "refuse"
    """Categorical only: a value outside ``categories`` is refused (400), or served (and counted
    as unseen), as the model's encoder decides (``handle_unknown``)."""
    dtype: Literal["float32", "string", "int64"] = "float32"
    """The element type of this column's own ONNX input (layout ``columns``); ``float32`` for
    every column of a ``matrix`` layout."""


class InputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    columns: list[Column]
    layout: Literal["matrix", "columns"] = "matrix"
    """``matrix``: one float32 ONNX input ``name`` [batch, n_columns] (numeric and boolean
    values, categorical codes); ``columns``: one ONNX input per column, named as the column,
    [batch, 1] of the column's ``dtype`` (a scikit-learn ColumnTransformer pipeline)."""
    name: str = "input"
    """The ONNX input of a ``matrix`` layout."""

    @cached_property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @cached_property
    def numeric_only(self) -> bool:
        """Every column numeric: the row matrix is the request's numbers as they are."""
        return all(c.kind == "numeric" for c in self.columns)

    @cached_property
    def allow_missing(self) -> bool:
        """Every column takes a missing value."""
        return all(c.allow_missing for c in self.columns)

    @cached_property
    def missing_allowed(self) -> np.ndarray:
        """bool [n_columns]: which columns take a missing value."""
        return np.array([c.allow_missing for c in self.columns], dtype=bool)


class OutputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    probabilities: str | None = None
    """Classifiers: ONNX output holding class probabilities, float32 [batch, n_classes]."""
    label: str | None = None
    """ONNX output holding the native predicted label (unused by the server)."""
    value: str | None = None
    """Regressors: ONNX output holding the prediction, float32 [batch, 1] or [batch]."""


class OnnxInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str
    sha256: str
    opset: int
    size_bytes: int


class DatasetInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    rows_train: int
    rows_validation: int
    rows_test: int
    positive_rate_train: float | None = None
    """Binary: share of positive labels in the training split."""
    seed: int | None = None
    source: str = ""
    """Where the data came from (generator and parameters, a package's bundled data, a CSV)."""


class BinaryMetrics(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="binary", tag_field="task"
):
    """Hold-out test metrics at the threshold chosen on the validation split."""

    threshold: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    accuracy: float
    baseline_accuracy: float
    """Accuracy of always predicting the majority class: read accuracy only beside it."""
    confusion_matrix: list[list[int]]
    """[[tn, fp], [fn, tp]] on the test split."""
    positive_rate_test: float
    cv_pr_auc_mean: float | None = None
    cv_pr_auc_std: float | None = None
    threshold_rule: str = "f1-optimal on validation"


class MulticlassMetrics(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="multiclass", tag_field="task"
):
    """Hold-out test metrics of the argmax label; per-class lists follow ``classes``."""

    accuracy: float
    baseline_accuracy: float
    """Accuracy of always predicting the most frequent training class."""
    macro_f1: float
    weighted_f1: float
    log_loss: float
    pr_auc_per_class: list[float]
    """One-vs-rest average precision of each class."""
    macro_pr_auc: float
    confusion_matrix: list[list[int]]
    """Rows: true class, columns: predicted class, in the order of ``classes``."""
    class_rates_test: list[float]
    cv_macro_f1_mean: float | None = None
    cv_macro_f1_std: float | None = None


class RegressionMetrics(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="regression", tag_field="task"
):
    """Hold-out test errors, beside those of predicting the training target's mean/median."""

    mae: float
    rmse: float
    r2: float
    mape: float | None
    """Mean absolute percentage error; None when the target has values at or near zero."""
    residual_quantiles: dict[str, float]
    """Quantiles of (prediction - target): keys ``p05``, ``p25``, ``p50``, ``p75``, ``p95``."""
    baseline_mae: float
    """MAE of always predicting the training target's median."""
    baseline_rmse: float
    """RMSE of always predicting the training target's mean."""
    target_mean: float
    target_std: float
    cv_mae_mean: float | None = None
    cv_mae_std: float | None = None


Metrics = BinaryMetrics | MulticlassMetrics | RegressionMetrics


class Parity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_abs_diff: float
    """Largest |ONNX - native| over the hold-out rows (probabilities, or predicted values)."""
    rows: int
    tolerance: float
    """In the units of ``max_abs_diff``: absolute for probabilities; for a regressor the
    relative tolerance times ``relative_to``."""
    relative_to: float | None = None
    """Regression: the target's scale (standard deviation on the hold-out rows) the tolerance
    is relative to."""


class Cost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """ONNX Runtime cost measured at export time, one intra-op thread."""

    us_batch1: float
    """Median microseconds for one call with one row."""
    us_per_row_batch64: float
    us_per_row_batch512: float


class Histogram(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bin_edges: list[float]
    """Increasing edges; len(counts) == len(bin_edges) + 1 (open-ended outer bins)."""
    counts: list[int]


class FeatureReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    histogram: Histogram | None = None
    """Numeric and boolean columns: the values' histogram."""
    category_counts: list[int] | None = None
    """Categorical columns: rows per known category, in the order of the column's
    ``categories``."""
    unseen: int = 0
    """Categorical columns: rows whose value is outside the known categories."""
    missing: int = 0


class Reference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Training-time distributions that drift monitoring compares live traffic against."""

    features: list[FeatureReference]
    scores: Histogram
    """What the model answered on the training split. Binary: the positive-class score;
    multiclass: the predicted class's index (edges 0.5, 1.5, ...: one bin per class);
    regression: the predicted value (quantile edges)."""
    base_rate: float | None = None
    """Binary: positive rate on the training split."""
    predicted_positive_rate: float | None = None
    """Binary: share of training rows at or above the threshold."""
    class_shares: list[float] | None = None
    """Multiclass: each class's share of the training labels, in the order of ``classes``."""
    target_mean: float | None = None
    """Regression: the training target's mean."""


VARIANT_FILE_PATTERN = re.compile(r"^variant-[a-z0-9][a-z0-9_\-]{0,63}\.onnx$")
"""A variant's ONNX file: a plain file name in the version folder, ``variant-<name>.onnx``."""


class Variant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A cheaper version of the model, exported beside it (the *ladder*, issue 15).

    A truncated tree ensemble: the first ``trees`` boosting rounds of an XGBoost model or the
    first ``trees`` trees of a random forest, exported to its own ONNX file, parity-checked
    against the native truncated model on the same hold-out rows, with its own decision
    threshold (binary: chosen on the validation split), its own hold-out metrics and its own
    measured cost. The server serves variants when a model degrades under load
    (``TABSERVE_DEGRADE_OBJECTIVE_MS``) or answers through its cascade.
    """

    name: str
    """Unique among the card's variants, e.g. ``k12``."""
    trees: int
    """Boosting rounds kept (XGBoost: one tree per class and round for a multiclass model), or
    trees kept (random forest)."""
    onnx: OnnxInfo
    metrics: Metrics
    parity: Parity
    cost: Cost


class Cascade(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A binary model's cascade (issue 15): ``variant`` scores every row; a row whose
    positive-class score lies inside ``[low, high]`` is scored again by the full model, and the
    rest keep the variant's score. The band is chosen on the validation split (the narrowest
    that keeps PR-AUC and F1 within ``tolerance`` of the full model's there) and always holds
    both the variant's and the full model's threshold, so a row kept by the variant is on the
    same side of the full model's threshold as the variant put it."""

    variant: str
    low: float
    high: float
    tolerance: float
    escalated_share: float
    """Share of the hold-out test rows the cascade sends on to the full model."""
    metrics: BinaryMetrics
    """The cascade's scores on the hold-out test rows, at the full model's threshold."""
    us_per_row_batch64: float
    """Measured cost of the cascade per row on the hold-out rows at batch 64 (variant on every
    row, the full model on the escalated ones)."""


class ModelCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    name: str
    version: int
    created_at: str
    framework: str
    """'sklearn' or 'xgboost' (how the native model was made)."""
    estimator: str
    """The native estimator's class path, e.g. 'xgboost.XGBClassifier'."""
    recipe: str
    """The bundled recipe's name, or 'byo' for a user's own model."""
    task: Task
    input: InputSpec
    outputs: OutputSpec
    classes: list[Label]
    """Classifiers: the labels, as the user's own values, in the order of the scores; empty for
    a regressor."""
    positive_class: Label | None
    """Binary: the class whose score the threshold applies to; None otherwise."""
    onnx: OnnxInfo
    dataset: DatasetInfo
    metrics: Metrics
    parity: Parity
    cost: Cost
    reference: Reference
    fingerprint: str = ""
    """Hash of everything that went into the build; unchanged inputs make no new version."""
    params: dict[str, str | int | float | bool | None] = {}
    description: str = ""
    variants: list[Variant] = []
    """Cheaper variants of the model, each with its own ONNX file in the version folder (the
    ladder); empty for most models and for every card written before the ladder existed."""
    cascade: Cascade | None = None
    """Binary models with a ladder: the card's variant answers the confident rows, the full
    model the rest (served when ``TABSERVE_CASCADE_MODELS`` names the model)."""

    @property
    def threshold(self) -> float:
        """Binary: the decision threshold on the positive class's score (0.5 otherwise)."""
        metrics = self.metrics
        return metrics.threshold if isinstance(metrics, BinaryMetrics) else 0.5

    @property
    def positive_index(self) -> int:
        """Binary: the positive class's column in the scores (the last one otherwise)."""
        if self.positive_class is None:
            return len(self.classes) - 1
        return self.classes.index(self.positive_class)

    @property
    def n_outputs(self) -> int:
        """Columns of the score matrix: one per class, or 1 for a regressor's value."""
        return 1 if self.task == "regression" else len(self.classes)


_raw_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """A version-1 card document as version 2 (others are returned as they are).

    Version 1 described a binary classifier over numeric columns: ``input`` held ``name``,
    ``feature_names``, ``dtype`` and one ``allow_missing`` for every column; ``metrics`` had no
    task tag; ``classes`` were ints.
    """
    if doc.get("schema_version") != 1:
        return doc
    out = dict(doc)
    out["schema_version"] = SCHEMA_VERSION
    out["task"] = "binary"
    old = doc.get("input")
    if isinstance(old, dict) and "feature_names" in old:
        allow = bool(old.get("allow_missing", False))
        names = old.get("feature_names")
        out["input"] = {
            "layout": "matrix",
            "name": old.get("name", "input"),
            "columns": [{"name": n, "allow_missing": allow} for n in names]
            if isinstance(names, list)
            else names,
        }
    metrics = doc.get("metrics")
    if isinstance(metrics, dict):
        out["metrics"] = {"task": "binary", **metrics}
    return out


def decode_card(data: bytes, *, origin: str = "model.json") -> ModelCard:
    """Parse and validate a model.json document (version 1 migrated, :func:`migrate`); raise
    InvalidModelCard naming the problem."""
    try:
        doc = _raw_decoder.decode(data)
        card = msgspec.convert(migrate(doc), ModelCard)
    except msgspec.ValidationError as exc:
        raise InvalidModelCard(f"{origin}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidModelCard(f"{origin}: not valid JSON ({exc})") from exc
    problems = card_problems(card)
    if problems:
        raise InvalidModelCard(f"{origin}: " + "; ".join(problems))
    return card


def encode_card(card: ModelCard) -> bytes:
    """Serialise a card, validating it first so an invalid card is never written."""
    problems = card_problems(card)
    if problems:
        raise InvalidModelCard(f"{card.name}/{card.version}: " + "; ".join(problems))
    return msgspec.json.format(_encoder.encode(card), indent=2) + b"\n"


def card_problems(card: ModelCard) -> list[str]:
    """Semantic checks that a JSON schema cannot express."""
    problems: list[str] = []
    if card.schema_version != SCHEMA_VERSION:
        problems.append(f"schema_version {card.schema_version} is not {SCHEMA_VERSION}")
    if not NAME_PATTERN.match(card.name):
        problems.append(f"name {card.name!r} must match {NAME_PATTERN.pattern}")
    if card.version < 1:
        problems.append(f"version must be a positive integer, got {card.version}")
    problems.extend(_input_problems(card.input))
    problems.extend(_task_problems(card))
    if not re.fullmatch(r"[0-9a-f]{64}", card.onnx.sha256):
        problems.append("onnx.sha256 must be 64 lowercase hex digits")
    if (
        not math.isfinite(card.parity.max_abs_diff)
        or card.parity.max_abs_diff > card.parity.tolerance
    ):
        problems.append(
            f"parity.max_abs_diff {card.parity.max_abs_diff} exceeds "
            f"tolerance {card.parity.tolerance}"
        )
    problems.extend(_reference_problems(card))
    problems.extend(_variant_problems(card))
    return problems


def _variant_problems(card: ModelCard) -> list[str]:
    problems: list[str] = []
    names = [v.name for v in card.variants]
    files = [v.onnx.file for v in card.variants]
    if len(set(names)) != len(names):
        problems.append(f"variants have duplicate names: {names}")
    if len(set(files)) != len(files) or card.onnx.file in files:
        problems.append(f"variants share an ONNX file: {files}")
    cascade = card.cascade
    if cascade is not None:
        if card.task != "binary":
            problems.append("cascade: only a binary model has one")
        if cascade.variant not in names:
            problems.append(f"cascade: variant {cascade.variant!r} is not among {names}")
        if not 0.0 <= cascade.low <= cascade.high <= 1.0:
            problems.append(f"cascade: band [{cascade.low}, {cascade.high}] is not within [0, 1]")
    for v in card.variants:
        where = f"variant {v.name!r}"
        if not NAME_PATTERN.match(v.name):
            problems.append(f"{where}: name must match {NAME_PATTERN.pattern}")
        if v.trees < 1:
            problems.append(f"{where}: trees must be at least 1, got {v.trees}")
        if not VARIANT_FILE_PATTERN.match(v.onnx.file):
            problems.append(
                f"{where}: onnx.file {v.onnx.file!r} must be a file in the version folder "
                f"matching {VARIANT_FILE_PATTERN.pattern}"
            )
        if not re.fullmatch(r"[0-9a-f]{64}", v.onnx.sha256):
            problems.append(f"{where}: onnx.sha256 must be 64 lowercase hex digits")
        if v.onnx.size_bytes < 1:
            problems.append(f"{where}: onnx.size_bytes must be positive")
        if not math.isfinite(v.parity.max_abs_diff) or v.parity.max_abs_diff > v.parity.tolerance:
            problems.append(
                f"{where}: parity.max_abs_diff {v.parity.max_abs_diff} exceeds "
                f"tolerance {v.parity.tolerance}"
            )
        metrics_task = type(v.metrics).__struct_config__.tag
        if metrics_task != card.task:
            problems.append(
                f"{where}: metrics are for a {metrics_task} model, the card's task is {card.task}"
            )
        if isinstance(v.metrics, BinaryMetrics) and not 0.0 <= v.metrics.threshold <= 1.0:
            problems.append(f"{where}: metrics.threshold {v.metrics.threshold} is outside [0, 1]")
    return problems


def _input_problems(spec: InputSpec) -> list[str]:
    problems: list[str] = []
    names = spec.feature_names
    if not names:
        problems.append("input.columns is empty")
    if len(set(names)) != len(names):
        problems.append("input.columns has duplicate names")
    for col in spec.columns:
        where = f"input column {col.name!r}"
        if col.kind == "categorical":
            cats = col.categories
            if not cats:
                problems.append(f"{where}: a categorical column needs its categories")
            elif len({type(c) for c in cats}) != 1:
                problems.append(f"{where}: categories mix ints and strings")
            elif len(set(cats)) != len(cats):
                problems.append(f"{where}: categories has duplicates")
        elif col.categories:
            problems.append(f"{where}: only a categorical column has categories")
        if spec.layout == "matrix" and col.dtype != "float32":
            problems.append(f"{where}: a matrix layout takes float32 only, not {col.dtype}")
        if spec.layout == "columns":
            text = bool(col.categories) and isinstance(col.categories[0], str)
            if col.dtype == "string" and not (col.kind == "categorical" and text):
                problems.append(f"{where}: a string input needs string categories")
            if col.dtype == "int64" and not (col.kind == "categorical" and not text):
                problems.append(f"{where}: an int64 input needs int categories")
            if col.dtype != "float32" and col.allow_missing:
                problems.append(f"{where}: a {col.dtype} input cannot take a missing value")
    return problems


def _task_problems(card: ModelCard) -> list[str]:
    problems: list[str] = []
    classes, task, metrics = card.classes, card.task, card.metrics
    if task == "regression":
        if classes or card.positive_class is not None:
            problems.append("a regressor has no classes and no positive_class")
        if card.outputs.value is None:
            problems.append("a regressor needs outputs.value")
    else:
        if len({type(c) for c in classes}) > 1:
            problems.append(f"classes mix ints and strings: {classes}")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            problems.append(f"classes must be at least two distinct labels, got {classes}")
        elif task == "binary" and len(classes) != 2:
            problems.append(f"a binary classifier has two classes, got {classes}")
        elif task == "multiclass" and len(classes) < 3:
            problems.append(f"a multiclass classifier has at least three classes, got {classes}")
        if task == "binary":
            if card.positive_class not in classes:
                problems.append(
                    f"positive_class {card.positive_class!r} is not in classes {classes}"
                )
        elif card.positive_class is not None:
            problems.append("only a binary classifier has a positive_class")
        if card.outputs.probabilities is None:
            problems.append("a classifier needs outputs.probabilities")
    metrics_task = type(metrics).__struct_config__.tag
    if metrics_task != task:
        problems.append(f"metrics are for a {metrics_task} model, the card's task is {task}")
    if isinstance(metrics, BinaryMetrics) and not 0.0 <= metrics.threshold <= 1.0:
        problems.append(f"metrics.threshold {metrics.threshold} is outside [0, 1]")
    return problems


def _reference_problems(card: ModelCard) -> list[str]:
    problems: list[str] = []
    ref = card.reference
    if [f.name for f in ref.features] != card.input.feature_names:
        problems.append("reference.features must list the input columns in order")
        return problems
    for col, feat in zip(card.input.columns, ref.features, strict=True):
        if col.kind == "categorical":
            counts = feat.category_counts
            if counts is None or len(counts) != len(col.categories):
                problems.append(f"reference {col.name}: one count per category is needed")
            elif any(c < 0 for c in counts) or feat.unseen < 0:
                problems.append(f"reference {col.name}: negative count")
        elif feat.histogram is None:
            problems.append(f"reference {col.name}: a histogram is needed")
        else:
            problems.extend(_histogram_problems(col.name, feat.histogram))
    problems.extend(_histogram_problems("scores", ref.scores))
    return problems


def _histogram_problems(name: str, hist: Histogram) -> list[str]:
    edges = hist.bin_edges
    if len(hist.counts) != len(edges) + 1:
        return [f"reference {name}: {len(hist.counts)} counts for {len(edges)} edges"]
    if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in pairwise(edges)):
        return [f"reference {name}: bin_edges must be finite and strictly increasing"]
    if any(c < 0 for c in hist.counts):
        return [f"reference {name}: negative count"]
    return []


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(version_dir: Path, *, verify_sha256: bool = True) -> ModelCard:
    """Read and validate ``version_dir/model.json``; check that it matches its folder and file."""
    card_path = version_dir / CARD_FILE
    try:
        data = card_path.read_bytes()
    except OSError as exc:
        raise InvalidModelCard(f"{card_path}: cannot read ({exc.strerror})") from exc
    card = decode_card(data, origin=str(card_path))
    if version_dir.name != str(card.version) or version_dir.parent.name != card.name:
        raise InvalidModelCard(
            f"{card_path}: card says {card.name}/{card.version}, folder is "
            f"{version_dir.parent.name}/{version_dir.name}"
        )
    for info in [card.onnx, *(v.onnx for v in card.variants)]:
        onnx_path = version_dir / info.file
        if not onnx_path.is_file():
            raise InvalidModelCard(f"{card_path}: ONNX file {info.file} is missing")
        if verify_sha256:
            actual = sha256_file(onnx_path)
            if actual != info.sha256:
                raise InvalidModelCard(
                    f"{onnx_path}: sha256 {actual[:12]}… does not match "
                    f"model.json {info.sha256[:12]}…"
                )
    return card


def version_dirs(models_dir: Path) -> list[Path]:
    """All ``<name>/<version>`` folders under the repository, sorted by name then version.

    Folders whose names are not a model name and a positive integer written without leading
    zeros (a temporary folder of an interrupted write, "0", "007" beside "7", "²") are skipped.
    """
    found: list[Path] = []
    if not models_dir.is_dir():
        return found
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if not NAME_PATTERN.match(model_dir.name):
            continue
        versions = [
            p for p in model_dir.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)
        ]
        found.extend(sorted(versions, key=lambda p: int(p.name)))
    return found


def placeholder_card(
    name: str = "placeholder",
    version: int = 1,
    *,
    feature_names: list[str] | None = None,
    columns: list[Column] | None = None,
    layout: Literal["matrix", "columns"] = "matrix",
    task: Task = "binary",
    sha256: str = "0" * 64,
    classes: list[Label] | None = None,
    threshold: float = 0.5,
    cost: Cost | None = None,
    reference: Reference | None = None,
) -> ModelCard:
    """A valid card for a model that exists only in code: measurements and tests.

    Give ``feature_names`` (numeric columns) or ``columns``. Its metrics are placeholders; its
    reference is one trivial bin per column unless given. Change any other field with
    ``msgspec.structs.replace``.
    """
    hist = Histogram(bin_edges=[0.0, 1.0], counts=[1, 1, 1])
    cols = columns if columns is not None else [Column(name=f) for f in feature_names or []]
    if classes is None:
        classes = [] if task == "regression" else [0, 1] if task == "binary" else [0, 1, 2]
    metrics: Metrics
    if task == "binary":
        metrics = BinaryMetrics(
            threshold=threshold,
            precision=0.5,
            recall=0.5,
            f1=0.5,
            roc_auc=0.5,
            pr_auc=0.5,
            log_loss=0.5,
            brier=0.25,
            accuracy=0.5,
            baseline_accuracy=0.5,
            confusion_matrix=[[1, 1], [1, 1]],
            positive_rate_test=0.5,
        )
    elif task == "multiclass":
        k = len(classes)
        metrics = MulticlassMetrics(
            accuracy=0.5,
            baseline_accuracy=0.5,
            macro_f1=0.5,
            weighted_f1=0.5,
            log_loss=0.5,
            pr_auc_per_class=[0.5] * k,
            macro_pr_auc=0.5,
            confusion_matrix=[[1] * k for _ in range(k)],
            class_rates_test=[1.0 / k] * k,
        )
    else:
        metrics = RegressionMetrics(
            mae=1.0,
            rmse=1.0,
            r2=0.5,
            mape=None,
            residual_quantiles={"p05": -1.0, "p25": -0.5, "p50": 0.0, "p75": 0.5, "p95": 1.0},
            baseline_mae=2.0,
            baseline_rmse=2.0,
            target_mean=0.0,
            target_std=1.0,
        )
    return ModelCard(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created_at="2026-01-01T00:00:00+00:00",
        framework="sklearn",
        estimator="placeholder",
        recipe="placeholder",
        task=task,
        input=InputSpec(columns=cols, layout=layout),
        outputs=OutputSpec(value="variable")
        if task == "regression"
        else OutputSpec(probabilities="probabilities"),
        classes=classes,
        positive_class=classes[-1] if task == "binary" else None,
        onnx=OnnxInfo(file=ONNX_FILE, sha256=sha256, opset=15, size_bytes=1),
        dataset=DatasetInfo(
            name="placeholder",
            rows_train=1,
            rows_validation=1,
            rows_test=1,
            positive_rate_train=0.5 if task == "binary" else None,
        ),
        metrics=metrics,
        parity=Parity(max_abs_diff=0.0, rows=1, tolerance=1e-4),
        cost=cost or Cost(us_batch1=10.0, us_per_row_batch64=5.0, us_per_row_batch512=1.0),
        reference=reference
        or Reference(
            features=[
                FeatureReference(name=c.name, category_counts=[1] * len(c.categories))
                if c.kind == "categorical"
                else FeatureReference(name=c.name, histogram=hist)
                for c in cols
            ],
            scores=hist,
            base_rate=0.5 if task == "binary" else None,
            predicted_positive_rate=0.5 if task == "binary" else None,
        ),
    )
