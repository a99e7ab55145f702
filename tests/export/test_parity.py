"""ONNX parity for every bundled recipe, trained for real on small data."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import Dataset, breast_cancer_dataset
from export.onnx_export import (
    PROBA_OUTPUT,
    TOLERANCE,
    check_parity,
    handles_missing,
    onnx_proba,
    session,
    to_onnx,
)
from export.recipes import CANCER_RECIPES, RECIPES, TrainData
from export.splits import stratified_split
from server.errors import ParityError

NAN_NATIVE = {"hist_gb", "xgb_small", "xgb_large", "cancer_xgb"}
"""Recipes whose models handle NaN natively and whose ONNX export must match them on NaN."""


def _train(name: str, data: Dataset) -> tuple[object, str, np.ndarray]:
    recipe = RECIPES.get(name) or CANCER_RECIPES[name]
    split = stratified_split(data.y, seed=0)
    train = TrainData(
        data.X[split.train],
        data.y[split.train],
        seed=0,
        X_val=data.X[split.validation],
        y_val=data.y[split.validation],
    )
    return recipe.fit(train), recipe.framework, data.X[split.test]


@pytest.mark.parametrize("name", [*RECIPES, *CANCER_RECIPES])
def test_recipe_exports_with_parity(name: str, small_fraud: Dataset) -> None:
    data = small_fraud if name in RECIPES else breast_cancer_dataset()
    model, framework, X_test = _train(name, data)
    exported = to_onnx(model, data.X.shape[1], framework)
    assert check_parity(model, exported, X_test, name) <= TOLERANCE

    sess = session(exported.onnx_bytes)
    (inp,) = sess.get_inputs()
    assert inp.name == exported.input_name and inp.type == "tensor(float)"
    assert inp.shape[1] == data.X.shape[1] and not isinstance(inp.shape[0], int)  # dynamic batch
    outputs = {o.name: o.type for o in sess.get_outputs()}
    assert outputs[PROBA_OUTPUT] == "tensor(float)"  # a tensor, not a ZipMap sequence
    for batch in (1, 7):
        assert onnx_proba(sess, exported, X_test[:batch]).shape == (batch, 2)

    assert handles_missing(model, exported, X_test, seed=0) == (name in NAN_NATIVE)


def test_parity_failure_is_loud(small_fraud: Dataset) -> None:
    """An export checked against a different native model must refuse to publish."""
    logreg, framework, X_test = _train("logreg", small_fraud)
    exported = to_onnx(logreg, small_fraud.X.shape[1], framework)
    other, _, _ = _train("xgb_small", small_fraud)
    with pytest.raises(ParityError, match="tolerance"):
        check_parity(other, exported, X_test, "logreg")


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X.astype(np.float32), y


def test_regression_parity_is_relative_to_the_target_spread() -> None:
    from sklearn.linear_model import Ridge

    from export.onnx_export import REGRESSION_TOLERANCE, Scorer, check_parity_rows
    from server.modelcard import Column, InputSpec

    X, y = _diabetes()
    spec = InputSpec(columns=[Column(name=f"x{i}") for i in range(X.shape[1])])
    model = Ridge(alpha=1.0).fit(X[:300], y[:300])
    exported = to_onnx(model, spec, "sklearn", "regression")
    assert exported.value_output == "variable" and exported.proba_output is None
    sess = session(exported.onnx_bytes)
    result = check_parity_rows(
        Scorer(model, exported, spec, "regression", sess), X[300:], y[300:], "ridge"
    )
    assert result.relative_to == pytest.approx(float(np.std(y[300:])))
    assert result.tolerance == pytest.approx(REGRESSION_TOLERANCE * result.relative_to)
    assert result.max_abs_diff <= result.tolerance
    assert not any(c.allow_missing for c in result.columns)  # Ridge refuses NaN

    other = Ridge(alpha=50.0).fit(X[:300], y[:300])
    with pytest.raises(ParityError, match=r"ridge: ONNX and native predictions differ by .*"):
        check_parity_rows(
            Scorer(other, exported, spec, "regression", sess), X[300:], y[300:], "ridge"
        )


def test_unseen_categories_answered_differently_are_refused_naming_the_column() -> None:
    """ONNX serves an unseen string as "no category"; a native model that reads it as a known
    category disagrees, and the export names the column."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from export.onnx_export import Scorer, check_parity_rows
    from server.columns import Codec
    from server.modelcard import Column, InputSpec

    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "blue"], 300)
    x = rng.normal(size=300)
    y = ((colour == "red") ^ (x > 0)).astype(int)
    frame = pd.DataFrame({"colour": colour, "x": x})
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("c", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                    remainder="passthrough",
                ),
            ),
            ("lr", LogisticRegression()),
        ]
    ).fit(frame, y)
    spec = InputSpec(
        columns=[
            Column(name="colour", kind="categorical", categories=["blue", "red"], dtype="string"),
            Column(name="x"),
        ],
        layout="columns",
    )
    exported = to_onnx(model, spec, "sklearn", "binary")
    codec = Codec(spec)
    X = np.c_[codec.encode_column(0, list(colour)), x].astype(np.float32)

    def honest(rows: np.ndarray) -> pd.DataFrame:
        names = codec.decode_column(0, rows[:, 0])
        return pd.DataFrame({"colour": names, "x": rows[:, 1].astype(np.float64)})

    def reads_unseen_as_red(rows: np.ndarray) -> pd.DataFrame:
        fixed = rows.copy()
        fixed[fixed[:, 0] == -1, 0] = 1.0
        return honest(fixed)

    sess = session(exported.onnx_bytes)
    ok = check_parity_rows(Scorer(model, exported, spec, "binary", sess, honest), X, y, "m")
    assert ok.columns[0].unknown == "serve" and ok.columns[1].allow_missing is False
    with pytest.raises(ParityError, match=r"column 'colour': with values outside its categories"):
        check_parity_rows(
            Scorer(model, exported, spec, "binary", sess, reads_unseen_as_red), X, y, "m"
        )
