"""A small model repository built by the real export pipeline, for tests of the server."""

from __future__ import annotations

from pathlib import Path

from export.build import BuildSettings, build_model
from export.data import fraud_dataset, pricing_dataset, returns_dataset
from export.recipes import PRICING_RECIPES, RECIPES, RETURNS_RECIPES

TEST_ROWS = 6_000
TEST_MODELS = ("logreg", "xgb_small")
"""Binary classifiers over the 24 numeric fraud columns."""
TYPED_ROWS = 2_500
TYPED_MODELS = ("pricing_sklearn", "pricing_xgb", "returns_sklearn", "returns_xgb")
"""Models with string columns: a regression (3 string + 20 numeric columns) and a 5-class
classifier with string labels (3 string, 14 numeric, 3 boolean columns), each as a scikit-learn
pipeline over the raw strings (layout ``columns``) and as XGBoost with native categorical
features (layout ``matrix``)."""
ALL_TEST_MODELS = (*TEST_MODELS, *TYPED_MODELS)


def build_test_repo(dest: Path, *, typed: bool = True) -> Path:
    """Build the test models (version 1 each) into ``dest``: ``logreg`` and ``xgb_small`` on 6k
    fraud rows, and (``typed``) the :data:`TYPED_MODELS` on 2.5k rows of the e-commerce data.

    Every version is complete: model.onnx, model.json and holdout.npz (the test split: 1,200
    fraud rows, 500 e-commerce rows).
    """
    settings = BuildSettings(models_dir=dest, seed=0, n_jobs=1, cv_folds=3, cost_budget_s=0.05)
    fraud = fraud_dataset(TEST_ROWS, seed=0)
    for name in TEST_MODELS:
        build_model(RECIPES[name], fraud, settings)
    if typed:
        pricing = pricing_dataset(TYPED_ROWS, seed=0)
        for recipe in PRICING_RECIPES.values():
            build_model(recipe, pricing, settings)
        returns = returns_dataset(TYPED_ROWS, seed=0)
        for recipe in RETURNS_RECIPES.values():
            build_model(recipe, returns, settings)
    return dest
