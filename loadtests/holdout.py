"""The labelled rows a load test replays, read from the model repository (never from the server).

For each model: its card (``model.json``: task, classes, threshold, offline test metrics) and its
hold-out split (``holdout.npz``: ``X`` the float32 row matrix [n, n_columns], category codes for
categorical columns; ``y`` the class index (int64) of a classifier or the target (float) of a
regressor), the same rows the offline metrics were computed on.

Each row is pre-encoded as a JSON fragment once, so building a request body on the load generator
costs a join, not a formatting pass. Rows go out as a real client would send them
(:class:`RowEncoder`): a model whose columns are all numeric gets today's fast list form
(``[1.5, 0.0, ...]``); a model with categorical or boolean columns gets one object per row with
the raw values (``{"region": "north", "amount": 12.5, "member": true}``), the category codes of
the row matrix decoded back by ``server.columns.Codec``, so a request looks like a client's and
the server's own decoding is what gets measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from server.columns import UNSEEN_TEXT, Codec
from server.modelcard import (
    HOLDOUT_FILE,
    BinaryMetrics,
    InputSpec,
    Label,
    ModelCard,
    MulticlassMetrics,
    RegressionMetrics,
    load_card,
    version_dirs,
)

UNSEEN_SENT = "__unseen__"
"""What a hold-out row's unseen category (code -1) is sent as: a string no model knows (the
server's own stand-in for ONNX Runtime holds a NUL, which no client would send)."""


class RowEncoder:
    """Row-matrix rows to the JSON a client sends for them: a list, or an object of raw values."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.objects = not spec.numeric_only
        """True: one object per row with the raw values; False: a list of numbers."""
        self._codec = Codec(spec)
        self._names = spec.feature_names
        self._encoder = msgspec.json.Encoder()

    def raw_columns(self, X: NDArray[np.float32]) -> list[list[Any]]:
        """Per column, the raw values of ``X``'s rows (None for missing)."""
        columns: list[list[Any]] = []
        for j, column in enumerate(self.spec.columns):
            values: list[Any] = self._codec.decode_column(j, X[:, j]).tolist()
            if column.kind == "numeric":
                values = [None if math.isnan(v) else v for v in values]
            elif column.kind == "categorical":
                values = [UNSEEN_SENT if v == UNSEEN_TEXT else v for v in values]
                if column.categories and not isinstance(column.categories[0], str):
                    # the int stand-in for an unseen int category is sent as it is
                    values = [None if v is None else int(v) for v in values]
            columns.append(values)
        return columns

    def encode(self, X: NDArray[np.float32], *, objects: bool | None = None) -> list[bytes]:
        """One JSON fragment per row of ``X``: an object of raw values or a list (``objects``;
        by default objects exactly when the model has typed columns)."""
        as_objects = self.objects if objects is None else objects
        if not as_objects and self.spec.numeric_only:
            # float32 -> Python float is exact, and its shortest repr parses back to the same
            # float32; NaN (missing) is encoded as null.
            return [self._encoder.encode(row) for row in X.tolist()]
        rows = zip(*self.raw_columns(X), strict=True)
        if not as_objects:  # a list in column order, strings and all
            return [self._encoder.encode(list(values)) for values in rows]
        names = self._names
        return [self._encoder.encode(dict(zip(names, values, strict=True))) for values in rows]


def encode_rows(X: NDArray[np.float32]) -> list[bytes]:
    """Rows of an all-numeric model as JSON lists (NaN as null)."""
    encoder = msgspec.json.Encoder()
    return [encoder.encode(row) for row in X.tolist()]


@dataclass(frozen=True)
class ReplaySet:
    """One model's rows to send and the facts needed to score the answers."""

    model: str
    version: int
    dataset: str
    X: NDArray[np.float32]
    y: NDArray[Any]
    """Class index (int64) into ``classes`` for a classifier; the target (float64) for a
    regressor."""
    row_json: list[bytes]
    """``row_json[i]`` is row ``X[i]`` as the request sends it (a JSON list or object)."""
    threshold: float
    positive_class: Label | None
    feature_names: list[str]
    offline: dict[str, Any]
    """The card's hold-out test metrics, for the report's "under load vs offline" columns."""
    task: str = "binary"
    classes: tuple[Label, ...] = (0, 1)
    """The user's labels in score order (empty for a regressor)."""
    encoder: RowEncoder | None = None
    """How a row becomes JSON; None: the list form (an all-numeric model)."""

    @property
    def n_rows(self) -> int:
        return int(self.y.size)

    @property
    def labels(self) -> list[float]:
        """Per row, what the answer is scored against: class index, or target."""
        return [float(v) for v in self.y.tolist()]

    def body(self, indices: list[int] | range) -> bytes:
        """A predict request body carrying the given rows."""
        return b'{"instances":[' + b",".join(self.row_json[i] for i in indices) + b"]}"

    def encode_row(self, row: NDArray[np.float32]) -> bytes:
        """One row of the row matrix (e.g. a perturbed copy) as the request sends it."""
        if self.encoder is None:
            return encode_rows(row.reshape(1, -1))[0]
        return self.encoder.encode(row.reshape(1, -1))[0]


def latest_version_dir(models_dir: Path, name: str) -> Path:
    """The newest ``<models_dir>/<name>/<version>`` folder; FileNotFoundError if there is none."""
    candidates = [d for d in version_dirs(models_dir) if d.parent.name == name]
    if not candidates:
        available = sorted({d.parent.name for d in version_dirs(models_dir)})
        raise FileNotFoundError(f"no model {name!r} under {models_dir} (found: {available})")
    return candidates[-1]


def available_models(models_dir: Path) -> list[str]:
    """Models whose newest version has a hold-out file, in name order."""
    names = sorted({d.parent.name for d in version_dirs(models_dir)})
    return [n for n in names if (latest_version_dir(models_dir, n) / HOLDOUT_FILE).is_file()]


def read_card(models_dir: Path, name: str) -> ModelCard:
    return load_card(latest_version_dir(models_dir, name), verify_sha256=False)


def offline_metrics(card: ModelCard) -> dict[str, Any]:
    """The card's hold-out metrics under the keys the load tests' own summaries use."""
    m = card.metrics
    out: dict[str, Any] = {"task": card.task, "rows": card.dataset.rows_test}
    keys: tuple[str, ...]
    if isinstance(m, BinaryMetrics):
        keys = ("threshold", "precision", "recall", "f1", "roc_auc", "pr_auc", "accuracy")
    elif isinstance(m, MulticlassMetrics):
        keys = ("accuracy", "baseline_accuracy", "macro_f1", "weighted_f1", "log_loss")
    elif isinstance(m, RegressionMetrics):
        keys = ("mae", "rmse", "r2", "mape", "baseline_mae", "baseline_rmse")
    else:  # pragma: no cover - the union is closed
        keys = ()
    out.update({k: getattr(m, k) for k in keys})
    return out


GENERATED_DATASETS = ("fraud", "pricing", "returns")
"""Bundled data sets whose generator has a ``shift`` knob (see :func:`shifted_rows`)."""


def shifted_rows(
    dataset: str, n_rows: int, seed: int, shift: float
) -> tuple[NDArray[np.float32], NDArray[Any], list[str]]:
    """Fresh rows of a bundled data set's generator with its ``shift`` (X, y, column names).

    Data sets with a generator: ``fraud`` (``export.data.make_fraud``), ``pricing`` and
    ``returns`` (``export.data.pricing_dataset``, ``returns_dataset``: category shares and a
    few numbers move). ValueError for any other.
    """
    from export import data

    if dataset == "fraud":
        return data.make_fraud(n_rows, seed=seed, shift=shift)
    generators = {"pricing": data.pricing_dataset, "returns": data.returns_dataset}
    if dataset not in generators:
        raise ValueError(
            f"no data generator for the {dataset!r} data set; shifted traffic needs a model "
            f"trained on one of {', '.join(GENERATED_DATASETS)}"
        )
    made = generators[dataset](n_rows, seed, shift)
    return made.X, made.y, list(made.feature_names)


def load_replay(
    models_dir: Path, name: str, *, shift: float | None = None, seed: int = 7
) -> ReplaySet:
    """The hold-out rows of ``name``; with ``shift``, freshly generated shifted rows instead.

    Shifted rows come from the data generator of the model's data set (:func:`shifted_rows`)
    with the same number of rows as the hold-out split, so they only fit models trained on its
    columns.
    """
    version_dir = latest_version_dir(models_dir, name)
    card = load_card(version_dir, verify_sha256=False)
    y: NDArray[Any]
    if shift is None:
        with np.load(version_dir / HOLDOUT_FILE) as data:
            X = np.ascontiguousarray(data["X"], dtype=np.float32)
            target = np.asarray(data["y"]).ravel()
        dataset = card.dataset.name
    else:
        n_rows = card.dataset.rows_test or 5_000
        X, target, names = shifted_rows(card.dataset.name, n_rows, seed, shift)
        if names != card.input.feature_names:
            raise ValueError(
                f"model {name!r} was not trained on the {card.dataset.name!r} generator's "
                "columns; the shifted scenario needs a model of a bundled data set"
            )
        dataset = f"{card.dataset.name} shift={shift:g}"
    y = (
        target.astype(np.float64)
        if card.task == "regression"
        else np.asarray(target).astype(np.int64, copy=False)
    )
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != card.input.n_features:
        raise ValueError(f"{version_dir}: hold-out X {X.shape} / y {y.shape} do not match the card")
    if (
        card.task != "regression"
        and y.size
        and not 0 <= int(y.min()) <= int(y.max()) < len(card.classes)
    ):
        raise ValueError(
            f"{version_dir}: hold-out y holds class indices outside 0..{len(card.classes) - 1}"
        )
    encoder = RowEncoder(card.input)
    return ReplaySet(
        model=card.name,
        version=card.version,
        dataset=dataset,
        X=X,
        y=y,
        row_json=encoder.encode(X),
        threshold=card.threshold,
        positive_class=card.positive_class,
        feature_names=list(card.input.feature_names),
        offline=offline_metrics(card),
        task=card.task,
        classes=tuple(card.classes),
        encoder=encoder if encoder.objects else None,
    )
