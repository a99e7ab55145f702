"""A small model repository built by the real export pipeline, for tests of the server."""

from __future__ import annotations

from pathlib import Path

from export.build import BuildSettings, build_model
from export.data import fraud_dataset
from export.recipes import RECIPES

TEST_ROWS = 6_000
TEST_MODELS = ("logreg", "xgb_small")


def build_test_repo(dest: Path) -> Path:
    """Build ``logreg`` and ``xgb_small`` (version 1 each) on 6k fraud rows into ``dest``.

    Every version is complete: model.onnx, model.json and holdout.npz (the 1,200-row test split).
    """
    dataset = fraud_dataset(TEST_ROWS, seed=0)
    settings = BuildSettings(models_dir=dest, seed=0, n_jobs=1, cv_folds=3, cost_budget_s=0.05)
    for name in TEST_MODELS:
        build_model(RECIPES[name], dataset, settings)
    return dest
