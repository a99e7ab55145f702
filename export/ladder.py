"""The ladder: cheaper variants of a tree ensemble, made at export (issue 15, item 1).

A variant keeps the first K boosting rounds of an XGBoost model, or the first K trees of a
random forest (scikit-learn ``RandomForest*`` / ``ExtraTrees*``, bare or as a Pipeline's last
step). :func:`export.pipeline.publish_candidate` exports each variant like the full model
(ONNX, parity against the native truncated model, threshold, metrics, cost) and records it in
the card's ``variants``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

FRACTIONS: tuple[int, ...] = (8, 4, 2)
"""Variants keep 1/8, 1/4 and 1/2 of the full model's rounds or trees."""


@dataclass(frozen=True)
class Truncated:
    name: str
    """The variant's name in the card, ``k<trees>``."""
    trees: int
    model: Any
    """A native model that answers as the first ``trees`` rounds or trees do."""


def variant_file(name: str) -> str:
    """The variant's ONNX file in the version folder."""
    return f"variant-{name}.onnx"


def ladder_sizes(n_trees: int, fractions: tuple[int, ...] = FRACTIONS) -> list[int]:
    """Distinct K = n_trees // f, at least 1 and smaller than ``n_trees``, ascending."""
    return sorted({max(1, n_trees // f) for f in fractions} - {n_trees})


def _forest(model: Any) -> Any | None:
    """The forest itself (a Pipeline's last step), or None if ``model`` holds no forest."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.pipeline import Pipeline

    last = model.steps[-1][1] if isinstance(model, Pipeline) else model
    forests = (
        RandomForestClassifier,
        RandomForestRegressor,
        ExtraTreesClassifier,
        ExtraTreesRegressor,
    )
    return last if isinstance(last, forests) and hasattr(last, "estimators_") else None


def tree_count(model: Any, framework: str) -> int | None:
    """Boosting rounds (XGBoost) or trees (a forest) of a fitted model; None when the model
    cannot be truncated (no ladder)."""
    if framework == "xgboost":
        return int(model.get_booster().num_boosted_rounds())
    if framework == "sklearn":
        forest = _forest(model)
        return None if forest is None else len(forest.estimators_)
    return None


def truncate(model: Any, framework: str, k: int) -> Any:
    """A native copy of ``model`` that keeps its first ``k`` rounds or trees (the original is
    left as it is)."""
    if framework == "xgboost":
        # Booster slicing keeps the feature names and types (native categories); the copy
        # gets the original's parameters (enable_categorical, objective) for predict_proba.
        booster = model.get_booster()[:k]
        params = {**model.get_params(), "n_estimators": k, "early_stopping_rounds": None}
        small = type(model)(**params)
        small.load_model(bytearray(booster.save_raw("json")))
        small.get_booster().feature_names = booster.feature_names
        small.get_booster().feature_types = booster.feature_types
        return small
    forest = _forest(model)
    if forest is None:
        raise ValueError(f"{type(model).__name__} holds no random forest to truncate")
    small_forest = copy.copy(forest)  # shares the fitted trees; only the list is cut
    small_forest.estimators_ = forest.estimators_[:k]
    small_forest.n_estimators = k
    if model is forest:
        return small_forest
    from sklearn.pipeline import Pipeline

    return Pipeline([*model.steps[:-1], (model.steps[-1][0], small_forest)])


def ladder(model: Any, framework: str) -> list[Truncated]:
    """The truncated variants of ``model``, smallest first ([] when it is no tree ensemble or
    too small to cut)."""
    n = tree_count(model, framework)
    if n is None:
        return []
    return [Truncated(f"k{k}", k, truncate(model, framework, k)) for k in ladder_sizes(n)]
