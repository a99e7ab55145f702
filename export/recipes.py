"""Training recipes: one function per bundled model, spanning accuracy and inference cost.

Class imbalance: ``class_weight="balanced"`` (logistic regression, random forest,
HistGradientBoosting), ``scale_pos_weight = negatives / positives`` (XGBoost), and balanced sample
weights for the MLP (``MLPClassifier.fit`` takes ``sample_weight``; it has no ``class_weight``).
XGBoost stops early on the validation split and is then cut to its best iteration, so the
published (and converted) model is exactly the one that was evaluated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Param = str | int | float | bool | None


@dataclass(frozen=True)
class TrainData:
    """What a recipe may fit on. The test split never appears here."""

    X: NDArray[np.float32]
    y: NDArray[np.int64]
    seed: int
    n_jobs: int = 1
    X_val: NDArray[np.float32] | None = None
    """Validation rows for early stopping; None in cross-validation folds."""
    y_val: NDArray[np.int64] | None = None
    rounds: int | None = None
    """Fixed boosting rounds (cross-validation reuses the early-stopped count)."""


@dataclass(frozen=True)
class Recipe:
    name: str
    framework: Literal["sklearn", "xgboost"]
    description: str
    params: Mapping[str, Param]
    train: Callable[[Mapping[str, Param], TrainData], Any]
    """Fit and return the native model (call :meth:`fit`, which also bounds the threads)."""

    def fit(self, data: TrainData) -> Any:
        """Train on ``data`` with at most ``data.n_jobs`` OpenMP/BLAS threads."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=data.n_jobs):
            return self.train(self.params, data)


def _int(params: Mapping[str, Param], key: str) -> int:
    value = params[key]
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        raise TypeError(f"recipe parameter {key}={value!r} is not a number")
    return int(value)


def _float(params: Mapping[str, Param], key: str) -> float:
    value = params[key]
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        raise TypeError(f"recipe parameter {key}={value!r} is not a number")
    return float(value)


def _pos_weight(y: NDArray[np.int64]) -> float:
    positives = int(y.sum())
    return float(len(y) - positives) / max(positives, 1)


def _train_logreg(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=_float(params, "C"), class_weight="balanced", max_iter=2000),
    )
    return model.fit(data.X, data.y)


def _train_random_forest(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=_int(params, "n_estimators"),
        max_depth=_int(params, "max_depth"),
        min_samples_leaf=_int(params, "min_samples_leaf"),
        class_weight="balanced_subsample",
        n_jobs=data.n_jobs,
        random_state=data.seed,
    )
    return model.fit(data.X, data.y)


def _train_hist_gb(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=_int(params, "max_iter"),
        max_depth=_int(params, "max_depth"),
        learning_rate=_float(params, "learning_rate"),
        class_weight="balanced",
        early_stopping=False,
        random_state=data.seed,
    )
    return model.fit(data.X, data.y)


def _train_mlp(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.class_weight import compute_sample_weight

    hidden = tuple(int(h) for h in str(params["hidden"]).split("x"))
    model = make_pipeline(
        # Measured on the fraud data: plain scaling beats QuantileTransformer (which is also
        # slow in ONNX) and PowerTransformer on validation PR-AUC.
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=hidden,
            alpha=_float(params, "alpha"),
            batch_size=_int(params, "batch_size"),
            max_iter=_int(params, "max_iter"),
            random_state=data.seed,
        ),
    )
    weights = compute_sample_weight("balanced", data.y)
    with warnings.catch_warnings():
        # A fixed epoch budget is the recipe (it bounds build time); not converging within it
        # is expected, and the model is judged on the validation and test splits instead.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return model.fit(data.X, data.y, mlpclassifier__sample_weight=weights)


def _train_xgboost(params: Mapping[str, Param], data: TrainData) -> Any:
    import xgboost as xgb

    common: dict[str, Any] = {
        "max_depth": _int(params, "max_depth"),
        "learning_rate": _float(params, "learning_rate"),
        "subsample": _float(params, "subsample"),
        "colsample_bytree": _float(params, "colsample_bytree"),
        "min_child_weight": _float(params, "min_child_weight"),
        "scale_pos_weight": _pos_weight(data.y),
        "tree_method": "hist",
        "eval_metric": "aucpr",
        "n_jobs": data.n_jobs,
        "random_state": data.seed,
    }
    if data.rounds is not None or data.X_val is None:
        rounds = data.rounds or _int(params, "n_estimators")
        return xgb.XGBClassifier(n_estimators=rounds, **common).fit(data.X, data.y)
    model = xgb.XGBClassifier(
        n_estimators=_int(params, "n_estimators"),
        early_stopping_rounds=_int(params, "early_stopping_rounds"),
        **common,
    )
    model.fit(data.X, data.y, eval_set=[(data.X_val, data.y_val)], verbose=False)
    # Keep only the trees up to the best iteration: the converter exports every tree it sees.
    best = model.get_booster()[: model.best_iteration + 1]
    final = xgb.XGBClassifier()
    final.load_model(bytearray(best.save_raw("json")))
    return final


def boosting_rounds(model: Any) -> int | None:
    """Number of boosting rounds of a fitted XGBoost model (None for other models)."""
    booster = getattr(model, "get_booster", None)
    return None if booster is None else int(booster().num_boosted_rounds())


def _xgb_params(n_estimators: int, max_depth: int, learning_rate: float) -> dict[str, Param]:
    return {
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "learning_rate": learning_rate,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 1.0,
        "early_stopping_rounds": 50,
    }


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "logreg",
            "sklearn",
            "StandardScaler + LogisticRegression (balanced class weights)",
            {"C": 1.0},
            _train_logreg,
        ),
        Recipe(
            "random_forest",
            "sklearn",
            "RandomForest (balanced subsample class weights)",
            {"n_estimators": 60, "max_depth": 14, "min_samples_leaf": 10},
            _train_random_forest,
        ),
        Recipe(
            "hist_gb",
            "sklearn",
            "HistGradientBoosting (balanced class weights, handles NaN)",
            {"max_iter": 120, "max_depth": 6, "learning_rate": 0.1},
            _train_hist_gb,
        ),
        Recipe(
            "xgb_small",
            "xgboost",
            "XGBoost, about 50 trees of depth 4 (scale_pos_weight, early stopping on validation)",
            {**_xgb_params(50, 4, 0.15), "early_stopping_rounds": 20},
            _train_xgboost,
        ),
        Recipe(
            "xgb_large",
            "xgboost",
            "XGBoost, 500+ trees of depth 8 (scale_pos_weight, early stopping on validation)",
            # A low learning rate keeps early stopping past 500 rounds; min_child_weight=10
            # curbs depth-8 overfitting under scale_pos_weight (better validation PR-AUC).
            {**_xgb_params(700, 8, 0.03), "min_child_weight": 10.0},
            _train_xgboost,
        ),
        Recipe(
            "mlp",
            "sklearn",
            "StandardScaler + MLP 64x32 (balanced sample weights, 25 epochs)",
            {"hidden": "64x32", "alpha": 1e-3, "batch_size": 512, "max_iter": 25},
            _train_mlp,
        ),
    ]
}
"""Recipes for the fraud data, by model name."""

CANCER_RECIPES: dict[str, Recipe] = {
    "cancer_logreg": Recipe(
        "cancer_logreg",
        "sklearn",
        "StandardScaler + LogisticRegression on the breast cancer data",
        {"C": 0.5},
        _train_logreg,
    ),
    "cancer_xgb": Recipe(
        "cancer_xgb",
        "xgboost",
        "XGBoost (100 trees max, depth 3) on the breast cancer data",
        _xgb_params(100, 3, 0.1),
        _train_xgboost,
    ),
}
"""Recipes for scikit-learn's bundled breast cancer data, by model name."""
