"""Small typed models for the ``/v2`` and gRPC tests: scikit-learn pipelines over string,
numeric, boolean and int-category columns, converted with skl2onnx one ONNX input per column
(``layout="columns"``), each published as ``<name>/1/`` with a card from ``placeholder_card``.

- ``churn``: binary, string labels ``"no"``/``"yes"`` (positive ``"yes"``);
- ``segment``: multiclass, int labels 3, 5, 7;
- ``price``: regression.

Columns: ``region`` (string category; unseen values served: ``OneHotEncoder(handle_unknown=
"ignore")``), ``amount`` (numeric), ``member`` (boolean), ``tier`` (int category 1-3; unseen
refused: ``handle_unknown="error"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from server.modelcard import (
    CARD_FILE,
    ONNX_FILE,
    Column,
    Task,
    encode_card,
    placeholder_card,
    sha256_file,
)

REGIONS = ["east", "north", "south", "west"]
TIERS = [1, 2, 3]
COLUMNS = [
    Column(
        name="region", kind="categorical", categories=list(REGIONS), unknown="serve", dtype="string"
    ),
    Column(name="amount"),
    Column(name="member", kind="boolean"),
    Column(name="tier", kind="categorical", categories=list(TIERS), dtype="int64"),
]


@dataclass
class Built:
    name: str
    task: Task
    pipeline: Pipeline
    classes: list[Any]


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.choice(REGIONS, n),
            "amount": rng.normal(100.0, 30.0, n).round(2),
            "member": rng.random(n) < 0.4,
            "tier": rng.choice(TIERS, n).astype(np.int64),
        }
    )


def native_frame(df: pd.DataFrame) -> pd.DataFrame:
    """What the pipelines were fitted on (booleans as 0/1 floats)."""
    out = df.copy()
    out["member"] = out["member"].astype(np.float64)
    return out


def _pipeline(estimator: Any) -> Pipeline:
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
            ("num", StandardScaler(), ["amount"]),
            ("flag", "passthrough", ["member"]),
            ("tier", OneHotEncoder(handle_unknown="error"), ["tier"]),
        ]
    )
    return Pipeline([("pre", pre), ("model", estimator)])


def _targets(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    region = df["region"].map({"east": 0.0, "north": 1.0, "south": -1.0, "west": 0.5}).to_numpy()
    score = (df["amount"].to_numpy() - 100.0) / 30.0 + region + df["member"].to_numpy() * 0.8
    score = score + (df["tier"].to_numpy() - 2) * 0.6
    binary = np.where(score > 0.3, "yes", "no")
    multi = np.select([score < -0.5, score < 0.8], [3, 5], 7).astype(np.int64)
    value = 50.0 + 12.0 * score
    return binary, multi, value


def build(dest: Path) -> dict[str, Built]:
    """Fit, convert and publish the three models under ``dest``; the fitted pipelines."""
    df = frame(400, seed=1)
    x = native_frame(df)
    binary, multi, value = _targets(df)
    made = {
        "churn": Built("churn", "binary", _pipeline(LogisticRegression(max_iter=500)), []),
        "segment": Built("segment", "multiclass", _pipeline(LogisticRegression(max_iter=500)), []),
        "price": Built("price", "regression", _pipeline(Ridge(alpha=1.0)), []),
    }
    made["churn"].pipeline.fit(x, binary)
    made["segment"].pipeline.fit(x, multi)
    made["price"].pipeline.fit(x, value)
    types = [
        ("region", StringTensorType([None, 1])),
        ("amount", FloatTensorType([None, 1])),
        ("member", FloatTensorType([None, 1])),
        ("tier", Int64TensorType([None, 1])),
    ]
    for built in made.values():
        estimator = built.pipeline.named_steps["model"]
        classes: list[Any] = (
            [c.item() if isinstance(c, np.generic) else str(c) for c in estimator.classes_]
            if built.task != "regression"
            else []
        )
        built.classes = classes
        options = {id(estimator): {"zipmap": False}} if built.task != "regression" else None
        onnx_model = convert_sklearn(
            built.pipeline, initial_types=types, options=options, target_opset=17
        )
        folder = dest / built.name / "1"
        folder.mkdir(parents=True)
        (folder / ONNX_FILE).write_bytes(onnx_model.SerializeToString())
        card = placeholder_card(
            built.name,
            columns=list(COLUMNS),
            layout="columns",
            task=built.task,
            classes=classes or None,
            sha256=sha256_file(folder / ONNX_FILE),
        )
        (folder / CARD_FILE).write_bytes(encode_card(card))
    return made
