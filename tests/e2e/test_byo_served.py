"""Models people actually train, end to end: trained here outside the repository's recipes,
converted by ``export convert``'s code, served by a real ``tabserve serve`` process, and answered
over HTTP (``/v1`` rows as objects with the raw strings, booleans and numbers; ``/v2`` one input
per column) the same as the native model predicts on every hold-out row.

Covers a scikit-learn pipeline over a string column with "Yes"/"No" labels selecting columns by
name (a crash before typed columns), a multiclass pipeline with string labels, XGBoost
``multi:softprob``, a regression pipeline over strings and booleans, XGBoost ``count:poisson``,
and XGBoost with native categorical features fed raw category values.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from export.byo import convert
from export.repository import load_holdout
from server.columns import Codec
from server.modelcard import ModelCard, load_card
from tests.export.test_byo_tasks import (
    BUDGET,
    cancer_frame,
    default_data,
    diabetes_frame,
    halves,
    raw_frame,
    save,
    wine_forest,
)
from tests.support.server_process import ServerProcess

Native = Callable[[pd.DataFrame], Any]


def _default(tmp: Path, models: Path) -> Native:
    train, holdout = halves(default_data())
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["student"]),
                        ("num", StandardScaler(), ["balance", "income"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    )
    model.fit(train.drop(columns="default"), train["default"])
    convert(*save(tmp, model, holdout, "default"), "default", "default", models,
            cost_budget_s=BUDGET)  # fmt: skip
    return model.predict_proba  # type: ignore[no-any-return]


def _wine(tmp: Path, models: Path) -> Native:
    model, holdout = wine_forest()
    convert(*save(tmp, model, holdout, "wine"), "cultivar", "wine", models, cost_budget_s=BUDGET)
    return model.predict_proba  # type: ignore[no-any-return]


def _iris(tmp: Path, models: Path) -> Native:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    frame["species"] = data.target
    train, holdout = halves(frame)
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, objective="multi:softprob", n_jobs=1)
    model.fit(train.drop(columns="species"), train["species"])
    convert(*save(tmp, model, holdout, "iris"), "species", "iris", models, cost_budget_s=BUDGET)
    return model.predict_proba  # type: ignore[no-any-return]


def _diabetes(tmp: Path, models: Path) -> Native:
    train, holdout = halves(diabetes_frame())
    numeric = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["sex", "bmi_band"]),
                        ("num", StandardScaler(), numeric),
                    ],
                    remainder="passthrough",
                ),
            ),
            ("ridge", Ridge(alpha=1.0)),
        ]
    )
    model.fit(train.drop(columns="progression"), train["progression"])
    convert(*save(tmp, model, holdout, "diabetes"), "progression", "diabetes", models,
            cost_budget_s=BUDGET)  # fmt: skip
    return model.predict  # type: ignore[no-any-return]


def _demand(tmp: Path, models: Path) -> Native:
    data = load_diabetes(scaled=False)
    frame = pd.DataFrame(data.data, columns=data.feature_names)
    frame["y"] = np.floor(data.target / 40)
    train, holdout = halves(frame)
    model = xgb.XGBRegressor(n_estimators=20, max_depth=3, objective="count:poisson", n_jobs=1)
    model.fit(train.drop(columns="y"), train["y"])
    convert(*save(tmp, model, holdout, "demand"), "y", "demand", models, cost_budget_s=BUDGET)
    return model.predict  # type: ignore[no-any-return]


def _cancer(tmp: Path, models: Path) -> Native:
    frame = cancer_frame()
    frame["size_band"] = pd.Categorical(frame["size_band"])
    train, holdout = halves(frame)
    model = xgb.XGBClassifier(
        n_estimators=15, max_depth=3, enable_categorical=True, tree_method="hist", n_jobs=1
    )
    model.fit(train.drop(columns="diagnosis"), (train["diagnosis"] == "malignant").astype(int))
    holdout = holdout.assign(diagnosis=(holdout["diagnosis"] == "malignant").astype(int))
    convert(*save(tmp, model, holdout.astype({"size_band": str}), "cancer"), "diagnosis",
            "cancer", models, cost_budget_s=BUDGET)  # fmt: skip
    categories = list(frame["size_band"].cat.categories)

    def native(rows: pd.DataFrame) -> Any:
        rows = rows.copy()
        rows["size_band"] = pd.Categorical(rows["size_band"], categories=categories)
        return model.predict_proba(rows)

    return native


KINDS: dict[str, Callable[[Path, Path], Native]] = {
    "default": _default,
    "wine": _wine,
    "iris": _iris,
    "diabetes": _diabetes,
    "demand": _demand,
    "cancer": _cancer,
}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, int, dict[str, Native]]]:
    tmp = tmp_path_factory.mktemp("byo")
    models = tmp / "models"
    natives = {name: make(tmp, models) for name, make in KINDS.items()}
    with ServerProcess(models) as server:
        yield models, server.port, natives


def _post(port: int, path: str, body: object) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _json_value(value: Any) -> Any:
    """A raw hold-out value as a client sends it: numbers, strings, booleans, null."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _rows(card: ModelCard, frame: pd.DataFrame) -> list[dict[str, Any]]:
    names = card.input.feature_names
    return [
        {name: _json_value(value) for name, value in zip(names, row, strict=True)}
        for row in frame[names].itertuples(index=False)
    ]


@pytest.mark.parametrize("name", list(KINDS))
def test_v1_answers_every_holdout_row_as_the_native_model(
    served: tuple[Path, int, dict[str, Native]], name: str
) -> None:
    models, port, natives = served
    card = load_card(models / name / "1")
    X, _ = load_holdout(models / name / "1")
    frame = raw_frame(card, X)
    want = np.asarray(natives[name](frame), dtype=np.float64).reshape(len(X), -1)
    answer = _post(port, f"/v1/models/{name}/predict", {"instances": _rows(card, frame)})
    predictions = answer["predictions"]
    assert len(predictions) == len(X)
    if card.task == "regression":
        assert "classes" not in answer
        got = np.array([[p["value"]] for p in predictions])
    else:
        assert answer["classes"] == card.classes
        got = np.array([p["scores"] for p in predictions])
        labels = [p["label"] for p in predictions]
        assert set(labels) <= set(card.classes)
        if card.task == "multiclass":
            assert labels == [card.classes[int(i)] for i in np.argmax(got, axis=1)]
        else:
            positive = np.asarray(got[:, card.positive_index] >= card.threshold)
            other = card.classes[1 - card.positive_index]
            assert labels == [card.positive_class if p else other for p in positive]
    assert got.shape == want.shape
    # float32 answers: the card's parity tolerance plus the float32 rounding of the value
    slack = card.parity.tolerance + 1e-6 * float(np.max(np.abs(want)))
    assert float(np.max(np.abs(got - want))) <= slack


def test_v2_one_input_per_column_answers_as_v1(
    served: tuple[Path, int, dict[str, Native]],
) -> None:
    models, port, _ = served
    for name in ("default", "diabetes"):
        card = load_card(models / name / "1")
        X, _ = load_holdout(models / name / "1")
        codec = Codec(card.input)
        rows = X[:5]
        inputs = []
        for j, column in enumerate(card.input.columns):
            values = [_json_value(v) for v in codec.decode_column(j, rows[:, j])]
            datatype = {"categorical": "BYTES", "boolean": "BOOL"}.get(column.kind, "FP64")
            inputs.append({"name": column.name, "shape": [5, 1], "datatype": datatype,
                           "data": values})  # fmt: skip
        v2 = _post(port, f"/v2/models/{name}/infer", {"inputs": inputs})
        frame = raw_frame(card, rows)
        v1 = _post(port, f"/v1/models/{name}/predict", {"instances": _rows(card, frame)})
        outputs = {o["name"]: o for o in v2["outputs"]}
        if card.task == "regression":
            assert outputs["value"]["data"] == [p["value"] for p in v1["predictions"]]
        else:
            assert outputs["label"]["data"] == [p["label"] for p in v1["predictions"]]
            assert outputs["label"]["datatype"] == "BYTES"
            flat = [s for p in v1["predictions"] for s in p["scores"]]
            assert outputs["probabilities"]["data"] == flat
