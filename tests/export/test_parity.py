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
