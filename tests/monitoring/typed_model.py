"""Tiny typed ONNX models for monitoring tests through the real app: a scikit-learn pipeline
over a string column and a number, converted per column with skl2onnx, published in a temporary
repository as ``<name>/1/`` with a card whose reference comes from ``reference_stats``.

- ``shop-segment``: multiclass (string labels "bargain", "regular", "premium");
- ``shop-price``: regression.

Both take ``region`` (a string category; unseen values are served: ``OneHotEncoder(
handle_unknown="ignore")``) and ``amount`` (a number).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from export.reference import reference_stats
from server.columns import Codec
from server.modelcard import (
    ONNX_FILE,
    Column,
    InputSpec,
    Label,
    Metrics,
    ModelCard,
    MulticlassMetrics,
    OnnxInfo,
    RegressionMetrics,
    encode_card,
    placeholder_card,
)

REGIONS = ["east", "north", "south", "west"]
COLUMNS = [
    Column(name="region", kind="categorical", categories=REGIONS, unknown="serve", dtype="string"),
    Column(name="amount"),
]
SEGMENTS = ["bargain", "premium", "regular"]
"""The segment model's classes, in the order of its scores (scikit-learn sorts them)."""
REGION_SHARES = [0.2, 0.4, 0.3, 0.1]


def raw_rows(n: int, seed: int, shares: list[float] = REGION_SHARES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.choice(REGIONS, size=n, p=shares),
            "amount": rng.lognormal(3.0, 0.6, size=n).astype(np.float32),
        }
    )


def row_matrix(frame: pd.DataFrame) -> NDArray[np.float32]:
    """The server's row matrix of raw rows (through the same Codec the server uses)."""
    codec = Codec(InputSpec(columns=COLUMNS, layout="columns"))
    return np.column_stack(
        [codec.encode_column(j, frame[c.name].tolist()) for j, c in enumerate(COLUMNS)]
    ).astype(np.float32)


def targets(frame: pd.DataFrame, seed: int) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    """The rows' price (with noise: the regressor's target) and segment (the classifier's)."""
    effects = {"east": 0.0, "north": 5.0, "south": -5.0, "west": 10.0}
    region_effect = frame["region"].map(effects).fillna(0.0)  # an unseen region: no effect
    price = (2.0 * frame["amount"] + region_effect).to_numpy(dtype=np.float64)
    segment = np.where(price < 35, "bargain", np.where(price < 60, "regular", "premium"))
    noise = np.random.default_rng(seed).normal(0.0, 3.0, size=len(frame))
    return price + noise, segment


def _pipeline(estimator: Any) -> Pipeline:
    return Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
                        ("num", StandardScaler(), ["amount"]),
                    ]
                ),
            ),
            ("model", estimator),
        ]
    )


def _onnx(model: Pipeline) -> bytes:
    initial_types = [
        ("region", StringTensorType([None, 1])),
        ("amount", FloatTensorType([None, 1])),
    ]
    options = {id(model.steps[-1][1]): {"zipmap": False}} if hasattr(model, "classes_") else None
    onx = convert_sklearn(model, initial_types=initial_types, options=options, target_opset=15)
    return bytes(onx.SerializeToString())


def _publish(repo: Path, card: ModelCard, onnx_bytes: bytes) -> None:
    folder = repo / card.name / "1"
    folder.mkdir(parents=True)
    (folder / ONNX_FILE).write_bytes(onnx_bytes)
    (folder / "model.json").write_bytes(encode_card(card))


def build_typed_repo(repo: Path, rows: int = 3_000) -> Path:
    """Train, convert and publish ``shop-segment`` and ``shop-price`` into ``repo``."""
    frame = raw_rows(rows, seed=0)
    X = row_matrix(frame)
    price, segment = targets(frame, seed=1)
    classifier = _pipeline(LogisticRegression(max_iter=500)).fit(frame, segment)
    assert list(classifier.classes_) == SEGMENTS
    regressor = _pipeline(Ridge(alpha=1.0)).fit(frame, price)
    # hold-out metrics for the cards (the live quality is shown beside them)
    test = raw_rows(1_000, seed=2)
    test_price, test_segment = targets(test, seed=3)
    predicted_price = regressor.predict(test)
    predicted_segment = classifier.predict(test)

    classes: list[Label] = list(SEGMENTS)
    y_class = np.searchsorted(np.array(SEGMENTS), segment)
    for name, model, task, y, outputs in (
        ("shop-segment", classifier, "multiclass", y_class, classifier.predict_proba(frame)),
        ("shop-price", regressor, "regression", price, regressor.predict(frame)),
    ):
        onnx_bytes = _onnx(model)
        is_classifier = task == "multiclass"
        card = placeholder_card(
            name,
            columns=COLUMNS,
            layout="columns",
            task="multiclass" if is_classifier else "regression",
            classes=classes if is_classifier else None,
            reference=reference_stats(
                COLUMNS,
                X,
                np.asarray(y),
                np.asarray(outputs, dtype=np.float64).reshape(rows, -1),
                "multiclass" if is_classifier else "regression",
                classes if is_classifier else [],
                None,
            ),
        )
        metrics: Metrics
        if isinstance(card.metrics, MulticlassMetrics):
            metrics = msgspec.structs.replace(
                card.metrics,
                accuracy=float(accuracy_score(test_segment, predicted_segment)),
                macro_f1=float(f1_score(test_segment, predicted_segment, average="macro")),
                weighted_f1=float(f1_score(test_segment, predicted_segment, average="weighted")),
            )
        else:
            assert isinstance(card.metrics, RegressionMetrics)
            errors = predicted_price - test_price
            metrics = msgspec.structs.replace(
                card.metrics,
                mae=float(np.mean(np.abs(errors))),
                rmse=float(np.sqrt(np.mean(errors**2))),
            )
        card = msgspec.structs.replace(
            card,
            metrics=metrics,
            onnx=OnnxInfo(
                file=ONNX_FILE,
                sha256=hashlib.sha256(onnx_bytes).hexdigest(),
                opset=15,
                size_bytes=len(onnx_bytes),
            ),
        )
        _publish(repo, card, onnx_bytes)
    return repo
