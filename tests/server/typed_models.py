"""Small typed models for the /v1 tests: scikit-learn pipelines over string, int, boolean and
numeric columns, converted by skl2onnx with one ONNX input per column, served from a repository
folder of their own (``name/1/model.onnx`` + ``model.json``).

Until the bundled string-column models exist in the session's test repository, these are the
typed models the server tests serve; each keeps its native pipeline so answers can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from server.modelcard import (
    HOLDOUT_FILE,
    ONNX_FILE,
    Column,
    OutputSpec,
    encode_card,
    placeholder_card,
    sha256_file,
)

REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "plus", "pro"]
STORES = [10, 20, 30]
SEGMENTS = ["bargain", "loyal", "premium"]

COLUMNS = [
    Column(name="region", kind="categorical", categories=REGIONS, unknown="serve", dtype="string"),
    Column(name="plan", kind="categorical", categories=PLANS, unknown="refuse", dtype="string"),
    Column(name="store", kind="categorical", categories=STORES, unknown="refuse", dtype="int64"),
    Column(name="member", kind="boolean"),
    Column(name="amount"),
    Column(name="tenure", allow_missing=True),
]
NAMES = [c.name for c in COLUMNS]


@dataclass
class TypedModel:
    name: str
    task: str
    pipeline: Pipeline
    classes: list[Any]

    def native(self, frame: pd.DataFrame) -> np.ndarray:
        """The native pipeline's answers: probabilities [n, k] or values [n, 1]."""
        if self.task == "regression":
            return np.asarray(self.pipeline.predict(frame), dtype=np.float64).reshape(-1, 1)
        return np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Raw rows (as a request sends them) as the DataFrame the native pipeline takes."""
    data = {
        name: [
            np.nan
            if r[name] is None
            else float(r[name])
            if name in ("member", "amount", "tenure")
            else r[name]
            for r in rows
        ]
        for name in NAMES
    }
    out = pd.DataFrame(data)
    out["store"] = out["store"].astype(np.int64)
    return out


def training_rows(n: int, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    region = rng.choice(REGIONS, n)
    plan = rng.choice(PLANS, n)
    store = rng.choice(STORES, n)
    member = rng.integers(0, 2, n).astype(np.float64)
    amount = rng.gamma(2.0, 30.0, n)
    tenure = rng.uniform(0, 60, n)
    tenure[rng.random(n) < 0.1] = np.nan
    x = pd.DataFrame(
        {
            "region": region,
            "plan": plan,
            "store": store.astype(np.int64),
            "member": member,
            "amount": amount,
            "tenure": tenure,
        }
    )
    lift = (
        (region == "north") * 0.8
        + (plan == "pro") * 1.2
        - (store == 30) * 0.5
        + member * 0.7
        + (amount - 60) / 40
        + np.nan_to_num(tenure, nan=30.0) / 60
    )
    noise = rng.normal(0, 0.6, n)
    score = lift + noise
    targets = {
        "binary": np.where(score > 1.2, "Yes", "No"),
        "multiclass": np.array(SEGMENTS)[np.digitize(score, [0.6, 1.8])],
        "regression": 20.0 + 15.0 * score,
    }
    return x, targets


def _pipeline(estimator: Any) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("region", OneHotEncoder(handle_unknown="ignore"), ["region"]),
            ("plan", OneHotEncoder(), ["plan"]),
            ("store", OneHotEncoder(), ["store"]),
            (
                "num",
                Pipeline([("fill", SimpleImputer()), ("scale", StandardScaler())]),
                ["amount", "tenure"],
            ),
            ("flag", "passthrough", ["member"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", estimator)])


def _convert(model: TypedModel, dest: Path) -> Path:
    initial = [
        ("region", StringTensorType([None, 1])),
        ("plan", StringTensorType([None, 1])),
        ("store", Int64TensorType([None, 1])),
        ("member", FloatTensorType([None, 1])),
        ("amount", FloatTensorType([None, 1])),
        ("tenure", FloatTensorType([None, 1])),
    ]
    options = None if model.task == "regression" else {id(model.pipeline): {"zipmap": False}}
    onx = convert_sklearn(model.pipeline, initial_types=initial, options=options, target_opset=17)
    version_dir = dest / model.name / "1"
    version_dir.mkdir(parents=True)
    onnx_path = version_dir / ONNX_FILE
    onnx_path.write_bytes(onx.SerializeToString())
    card = placeholder_card(
        model.name,
        columns=COLUMNS,
        layout="columns",
        task=model.task,  # type: ignore[arg-type]
        classes=model.classes or None,
        sha256=sha256_file(onnx_path),
    )
    outputs = (
        OutputSpec(value="variable")
        if model.task == "regression"
        else OutputSpec(probabilities="probabilities", label="label")
    )
    card = msgspec.structs.replace(card, outputs=outputs)
    (version_dir / "model.json").write_bytes(encode_card(card))
    return version_dir


def build_typed_repo(dest: Path) -> dict[str, TypedModel]:
    """``churn`` (binary, labels "No"/"Yes"), ``segment`` (three string classes) and ``spend``
    (regression), each fitted on the same typed columns and converted into ``dest``.
    ``churn`` also ships a ``holdout.npz`` whose X is the row matrix (the runner warms up on it)."""
    x, targets = training_rows(2_000, seed=0)
    models = {
        "churn": TypedModel(
            "churn", "binary", _pipeline(LogisticRegression(max_iter=500)), ["No", "Yes"]
        ),
        "segment": TypedModel(
            "segment",
            "multiclass",
            _pipeline(RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)),
            SEGMENTS,
        ),
        "spend": TypedModel("spend", "regression", _pipeline(Ridge()), []),
    }
    for model in models.values():
        model.pipeline.fit(x, targets[model.task])
        fitted = list(model.pipeline.classes_) if model.classes else []
        assert fitted == model.classes, fitted
        _convert(model, dest)
    from server.columns import Codec
    from server.modelcard import load_card

    codec = Codec(load_card(dest / "churn" / "1").input)
    head = x.head(64)
    matrix = np.stack(
        [
            codec.encode_column(j, [None if v != v else v for v in head[name].tolist()])
            for j, name in enumerate(NAMES)
        ],
        axis=1,
    )
    np.savez(
        dest / "churn" / "1" / HOLDOUT_FILE,
        X=matrix.astype(np.float32),
        y=(targets["binary"][:64] == "Yes").astype(np.int64),
    )
    return models
