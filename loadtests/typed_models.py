"""Small models with typed columns, built here (deterministically, in seconds) for measurements.

The bench's typed-columns cell and the load-test tests need models that take string columns
without depending on the bundled models being built: this module makes one from a fixed
synthetic shop data set (three string categorical columns, ``category``, ``channel`` and
``region``, then numeric columns ``x00``, ``x01``, ...), for each task, in either of two
layouts:

- ``columns``: the user's way. A scikit-learn ``Pipeline(ColumnTransformer([("cat",
  OneHotEncoder(handle_unknown="ignore"), <string columns by name>), ("num", StandardScaler(),
  <numeric columns by name>)]), estimator)`` converted by skl2onnx with one ONNX input per column
  (strings as strings). The card's categorical columns are ``dtype="string"``,
  ``unknown="serve"``.
- ``matrix``: the same pipeline and estimator fitted on the category *codes* (numbers), one float
  input [n, n_columns]: an all-numeric model of the same width doing the same one-hot work.

Each model is written as ``<models_dir>/<name>/1/`` with ``model.onnx``, ``model.json`` (from
``placeholder_card``, with the real sha256, the task's metrics measured on the hold-out split and
the ONNX-vs-native parity) and ``holdout.npz`` (``X`` the row matrix, ``y`` the class index or
target). scikit-learn and skl2onnx are imported only when a model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from server.columns import Codec
from server.modelcard import (
    CARD_FILE,
    HOLDOUT_FILE,
    ONNX_FILE,
    BinaryMetrics,
    Column,
    InputSpec,
    Label,
    Metrics,
    MulticlassMetrics,
    Parity,
    RegressionMetrics,
    Task,
    encode_card,
    placeholder_card,
    sha256_file,
)

CATEGORIES: dict[str, tuple[str, ...]] = {
    "category": (
        "books",
        "electronics",
        "fashion",
        "garden",
        "grocery",
        "home",
        "sports",
        "toys",
    ),
    "channel": ("app", "marketplace", "store", "web"),
    "region": ("central", "east", "north", "south", "west"),
}
"""The three string categorical columns and their known values."""
MULTICLASS_LABELS: tuple[str, ...] = ("damaged", "late", "wrong_size")
Layout = Literal["matrix", "columns"]


@dataclass(frozen=True)
class ShopData:
    """The row matrix (category codes first, then numbers) and the three tasks' targets."""

    X: NDArray[np.float32]
    binary: NDArray[np.int64]
    multiclass: NDArray[np.int64]
    regression: NDArray[np.float64]
    columns: list[Column]

    def target(self, task: Task) -> NDArray[Any]:
        return {
            "binary": self.binary,
            "multiclass": self.multiclass,
            "regression": self.regression,
        }[task]


def shop_columns(n_numeric: int = 20) -> list[Column]:
    """The typed columns: three string categorical columns, then ``n_numeric`` numbers."""
    cats = [
        Column(
            name=name, kind="categorical", categories=list(values), dtype="string", unknown="serve"
        )
        for name, values in CATEGORIES.items()
    ]
    return cats + [Column(name=f"x{i:02d}") for i in range(n_numeric)]


def make_shop(n_rows: int = 3_000, n_numeric: int = 20, seed: int = 0) -> ShopData:
    """A fixed synthetic data set; the same arguments give the same rows."""
    rng = np.random.default_rng(seed)
    columns = shop_columns(n_numeric)
    codes = [rng.integers(0, len(v), size=n_rows) for v in CATEGORIES.values()]
    numbers = rng.normal(size=(n_rows, n_numeric))
    effects = [rng.normal(scale=1.0, size=len(v)) for v in CATEGORIES.values()]
    weights = rng.normal(scale=0.6, size=n_numeric)
    signal = sum(e[c] for e, c in zip(effects, codes, strict=True)) + numbers @ weights
    noise = rng.normal(scale=0.7, size=n_rows)
    z = signal + noise
    binary = (z > np.quantile(z, 0.7)).astype(np.int64)
    multiclass = np.digitize(z, np.quantile(z, [0.4, 0.75])).astype(np.int64)
    regression = 50.0 + 10.0 * z
    X = np.column_stack([*codes, numbers]).astype(np.float32)
    return ShopData(X, binary, multiclass, regression.astype(np.float64), columns)


def _frame(X: NDArray[np.float32], columns: list[Column]) -> Any:
    import pandas as pd

    codec = Codec(InputSpec(columns=columns, layout="columns"))
    return pd.DataFrame(
        {
            c.name: codec.decode_column(j, X[:, j])
            if c.kind == "categorical"
            else X[:, j].astype(np.float32)
            for j, c in enumerate(columns)
        }
    )


def _pipeline(task: Task, cat: list[Any], num: list[Any]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimator = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=500)
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), cat), ("num", StandardScaler(), num)]
    )
    return Pipeline([("pre", pre), ("model", estimator)])


def _convert(model: Any, columns: list[Column], layout: Layout, task: Task) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if layout == "matrix":
        initial: list[Any] = [("input", FloatTensorType([None, len(columns)]))]
    else:
        initial = [
            (
                c.name,
                StringTensorType([None, 1]) if c.dtype == "string" else FloatTensorType([None, 1]),
            )
            for c in columns
        ]
    options = None if task == "regression" else {"zipmap": False}
    onnx_model = convert_sklearn(model, initial_types=initial, options=options, target_opset=15)
    return bytes(onnx_model.SerializeToString())


def _metrics(task: Task, y: NDArray[Any], out: NDArray[np.float64], k: int) -> Metrics:
    """The hold-out metrics the card records (numpy only, as the load tests compute them)."""
    from loadtests.scoring import classification_summary, multiclass_summary, regression_summary

    if task == "regression":
        r = regression_summary(y, out[:, 0])
        residual = out[:, 0] - y
        q = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95])
        return RegressionMetrics(
            mae=r["mae"],
            rmse=r["rmse"],
            r2=r["r2"],
            mape=r["mape"],
            residual_quantiles={
                k: float(v) for k, v in zip(("p05", "p25", "p50", "p75", "p95"), q, strict=True)
            },
            baseline_mae=float(np.mean(np.abs(y - np.median(y)))),
            baseline_rmse=float(np.std(y)),
            target_mean=float(np.mean(y)),
            target_std=float(np.std(y)),
        )
    if task == "multiclass":
        predicted = out.argmax(axis=1)
        m = multiclass_summary(y, predicted, out[np.arange(y.size), y])
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (y, predicted), 1)
        counts = np.bincount(y, minlength=k)
        return MulticlassMetrics(
            accuracy=m["accuracy"],
            baseline_accuracy=float(counts.max() / y.size),
            macro_f1=m["macro_f1"],
            weighted_f1=m["weighted_f1"],
            log_loss=m["log_loss"],
            pr_auc_per_class=[0.5] * k,
            macro_pr_auc=0.5,
            confusion_matrix=confusion.tolist(),
            class_rates_test=[float(c / y.size) for c in counts],
        )
    b = classification_summary(y, out[:, 1], 0.5)
    return BinaryMetrics(
        threshold=0.5,
        precision=b["precision"],
        recall=b["recall"],
        f1=b["f1"],
        roc_auc=b["roc_auc"],
        pr_auc=b["pr_auc"],
        log_loss=float(-np.mean(np.log(np.clip(out[np.arange(y.size), y], 1e-15, 1.0)))),
        brier=float(np.mean((out[:, 1] - y) ** 2)),
        accuracy=b["accuracy"],
        baseline_accuracy=float(max(y.mean(), 1 - y.mean())),
        confusion_matrix=[[int(b["tn"]), int(b["fp"])], [int(b["fn"]), int(b["tp"])]],
        positive_rate_test=float(y.mean()),
    )


def build_shop_model(
    models_dir: Path,
    name: str,
    *,
    task: Task = "binary",
    layout: Layout = "columns",
    n_rows: int = 3_000,
    n_numeric: int = 20,
    seed: int = 0,
) -> Path:
    """Train, convert and write ``<models_dir>/<name>/1``; return that folder.

    ``layout="columns"``: string categorical columns, one ONNX input per column; ``"matrix"``:
    the same columns as numeric codes, one float input (an all-numeric model of the same width).
    The last quarter of the rows is the hold-out split.
    """
    import onnxruntime as ort

    data = make_shop(n_rows, n_numeric, seed)
    typed = data.columns
    columns = typed if layout == "columns" else [Column(name=c.name) for c in typed]
    y = data.target(task)
    split = n_rows * 3 // 4
    X_train, X_test, y_train, y_test = data.X[:split], data.X[split:], y[:split], y[split:]
    n_cat = len(CATEGORIES)
    if layout == "columns":
        cat: list[Any] = [c.name for c in typed[:n_cat]]
        num: list[Any] = [c.name for c in typed[n_cat:]]
        model = _pipeline(task, cat, num).fit(_frame(X_train, typed), y_train)
        native = model.predict if task == "regression" else model.predict_proba
        native_out = np.asarray(native(_frame(X_test, typed)), dtype=np.float64)
    else:
        model = _pipeline(task, list(range(n_cat)), list(range(n_cat, len(typed))))
        model.fit(X_train, y_train)
        native = model.predict if task == "regression" else model.predict_proba
        native_out = np.asarray(native(X_test), dtype=np.float64)
    onnx_bytes = _convert(model, columns, layout, task)
    version_dir = models_dir / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / ONNX_FILE).write_bytes(onnx_bytes)
    np.savez(version_dir / HOLDOUT_FILE, X=X_test, y=y_test)

    classes: list[Label] = (
        [] if task == "regression" else list(MULTICLASS_LABELS) if task == "multiclass" else [0, 1]
    )
    card = placeholder_card(
        name,
        1,
        columns=columns,
        layout=layout,
        task=task,
        classes=classes,
        sha256=sha256_file(version_dir / ONNX_FILE),
    )
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    output = card.outputs.value if task == "regression" else card.outputs.probabilities
    feeds = Codec(card.input).onnx_feeds(X_test)
    served = np.asarray(session.run([output], feeds)[0], dtype=np.float64).reshape(len(X_test), -1)
    native_2d = native_out.reshape(len(X_test), -1)
    diff = float(np.max(np.abs(served - native_2d)))
    scale = float(np.std(y_test)) if task == "regression" else None
    tolerance = 1e-4 * (scale or 1.0)
    if not math.isfinite(diff) or diff > tolerance:
        raise RuntimeError(f"{name}: ONNX differs from the native model by {diff:g}")
    card = msgspec.structs.replace(
        card,
        metrics=_metrics(task, y_test, served, len(classes)),
        parity=Parity(max_abs_diff=diff, rows=len(X_test), tolerance=tolerance, relative_to=scale),
        estimator=f"sklearn.pipeline.Pipeline({type(model[-1]).__name__})",
        description=f"loadtests.typed_models: {task}, layout {layout}",
    )
    card = msgspec.structs.replace(
        card,
        onnx=msgspec.structs.replace(card.onnx, size_bytes=len(onnx_bytes), opset=15),
        dataset=msgspec.structs.replace(
            card.dataset,
            name=f"shop-{task}",
            rows_train=split,
            rows_validation=0,
            rows_test=len(X_test),
        ),
    )
    (version_dir / CARD_FILE).write_bytes(encode_card(card))
    return version_dir
