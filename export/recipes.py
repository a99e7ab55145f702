"""Training recipes: one function per bundled model, spanning accuracy and inference cost.

The fraud and breast cancer recipes are binary classifiers over numeric columns (layout
``matrix``). The e-commerce recipes (:data:`PRICING_RECIPES`, :data:`RETURNS_RECIPES`) train on
typed columns, each twice, the two ways people do it:

- a scikit-learn ``Pipeline`` fed a pandas DataFrame with the raw strings: a ``ColumnTransformer``
  selecting columns by name, ``OneHotEncoder(handle_unknown="ignore")`` for the string columns
  and, for the linear model, ``StandardScaler`` for the rest (trees take the numbers as they
  are); layout ``columns``: one ONNX input per column, strings as strings;
- XGBoost with native categorical features (``enable_categorical``, ``feature_types``), fed the
  row matrix whose categorical columns hold the category codes (layout ``matrix``). A code is the
  category's index in the column's sorted ``categories``, which is also the code pandas gives a
  ``category`` column with those categories.

Both answer an unseen category (the one-hot columns all zero; XGBoost's missing-value branch),
so the server serves it and counts it as unseen.

Class imbalance: ``class_weight="balanced"`` (logistic regression, random forest,
HistGradientBoosting), ``scale_pos_weight = negatives / positives`` (XGBoost), and balanced sample
weights for the MLP (``MLPClassifier.fit`` takes ``sample_weight``; it has no ``class_weight``).
XGBoost stops early on the validation split and is then cut to its best iteration, so the
published (and converted) model is exactly the one that was evaluated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from server.columns import Codec
from server.modelcard import Column, InputSpec, Label, Task

Param = str | int | float | bool | None


@dataclass(frozen=True)
class TrainData:
    """What a recipe may fit on. The test split never appears here."""

    X: NDArray[np.float32]
    """The row matrix (categorical columns hold category codes)."""
    y: NDArray[Any]
    """Classifiers: int64 class index; regression: the float64 target."""
    seed: int
    n_jobs: int = 1
    X_val: NDArray[np.float32] | None = None
    """Validation rows for early stopping; None in cross-validation folds."""
    y_val: NDArray[Any] | None = None
    rounds: int | None = None
    """Fixed boosting rounds (cross-validation reuses the early-stopped count)."""
    columns: tuple[Column, ...] = ()
    """The typed input columns; empty: every column is numeric."""
    classes: tuple[Label, ...] = (0, 1)
    """Classifiers: the labels ``y`` indexes (a recipe may fit on the labels themselves)."""


NativeInput = Callable[[NDArray[np.float32]], Any]
"""Row matrix -> what the native model's predict/predict_proba takes."""


@dataclass(frozen=True)
class Recipe:
    name: str
    framework: Literal["sklearn", "xgboost"]
    description: str
    params: Mapping[str, Param]
    train: Callable[[Mapping[str, Param], TrainData], Any]
    """Fit and return the native model (call :meth:`fit`, which also bounds the threads)."""
    task: Task = "binary"
    layout: Literal["matrix", "columns"] = "matrix"
    """How the ONNX graph takes its input (see ``server.modelcard.InputSpec``)."""
    frame_input: bool = False
    """True: the native model takes a pandas DataFrame of raw values (:func:`data_frame`),
    False: the row matrix itself."""
    ladder: bool = False
    """Also export the cheaper variants of this tree ensemble (:mod:`export.ladder`) on every
    build; ``tabserve export build --ladder`` does it for every tree ensemble."""
    siblings: tuple[str, ...] = ()
    """With the ladder: recipes of cheaper models (same framework, data and split) trained with
    this one and published as variants of it, named after their recipe."""

    def native_input(self, columns: Sequence[Column]) -> NativeInput | None:
        """Row matrix -> the native model's input; None when that is the matrix itself."""
        if not self.frame_input:
            return None
        spec = InputSpec(columns=list(columns))

        def to_frame(X: NDArray[np.float32]) -> Any:
            return data_frame(spec, X)

        return to_frame

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


def data_frame(spec: InputSpec, X: NDArray[np.float32]) -> Any:
    """The row matrix as a pandas DataFrame of raw values, named as the columns.

    Categories become their values (strings) through the server's own :class:`Codec`, so
    training, parity and serving map codes and values in one place; numbers stay numbers,
    booleans become bools.
    """
    import pandas as pd

    codec = Codec(spec)
    return pd.DataFrame(
        {c.name: codec.decode_column(j, X[:, j]) for j, c in enumerate(spec.columns)}
    )


def _columns(data: TrainData) -> list[Column]:
    if data.columns:
        return list(data.columns)
    return [Column(name=f"f{j}") for j in range(data.X.shape[1])]


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


def _string_pipeline(columns: list[Column], estimator: Any, *, scale: bool = True) -> Any:
    """``ColumnTransformer`` by column name: one-hot string columns, scale the others (or pass
    them through: trees need no scaling, and float32 scaling in ONNX moves values across split
    thresholds, which breaks parity)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in columns if c.kind == "categorical"]
    prepare = ColumnTransformer(
        [
            (
                "categories",
                OneHotEncoder(
                    categories=[list(c.categories) for c in categorical],
                    handle_unknown="ignore",
                    sparse_output=False,
                ),
                [c.name for c in categorical],
            ),
            (
                "numbers",
                StandardScaler() if scale else "passthrough",
                [c.name for c in columns if c.kind != "categorical"],
            ),
        ]
    )
    return Pipeline([("prepare", prepare), ("model", estimator)])


def _frame(data: TrainData, X: NDArray[np.float32]) -> Any:
    return data_frame(InputSpec(columns=_columns(data)), X)


def _train_pricing_sklearn(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = _string_pipeline(
        _columns(data),
        HistGradientBoostingRegressor(
            loss=str(params["loss"]),
            max_iter=_int(params, "max_iter"),
            max_leaf_nodes=_int(params, "max_leaf_nodes"),
            learning_rate=_float(params, "learning_rate"),
            early_stopping=False,
            random_state=data.seed,
        ),
        scale=False,
    )
    return model.fit(_frame(data, data.X), data.y)


def _train_returns_sklearn(params: Mapping[str, Param], data: TrainData) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = _string_pipeline(
        _columns(data), LogisticRegression(C=_float(params, "C"), max_iter=_int(params, "max_iter"))
    )
    # Fitted on the labels themselves, as a user would: the model's classes_ are the strings.
    labels = np.asarray(data.classes, dtype=object)[data.y]
    model.fit(_frame(data, data.X), labels)
    if list(model.classes_) != list(data.classes):
        raise ValueError(f"classes {list(data.classes)} are not in scikit-learn's (sorted) order")
    return model


def _feature_types(data: TrainData) -> list[str]:
    """XGBoost's feature types: ``c`` (categorical, by code) or ``q`` (a number)."""
    return ["c" if c.kind == "categorical" else "q" for c in _columns(data)]


def _train_xgb_typed(params: Mapping[str, Param], data: TrainData) -> Any:
    """XGBoost with native categorical features, a regressor or a multiclass classifier."""
    import xgboost as xgb

    objective = str(params["objective"])
    estimator = xgb.XGBClassifier if objective.startswith("multi:") else xgb.XGBRegressor
    common: dict[str, Any] = {
        "objective": objective,
        "max_depth": _int(params, "max_depth"),
        "learning_rate": _float(params, "learning_rate"),
        "subsample": _float(params, "subsample"),
        "colsample_bytree": _float(params, "colsample_bytree"),
        "min_child_weight": _float(params, "min_child_weight"),
        "max_cat_to_onehot": _int(params, "max_cat_to_onehot"),
        "enable_categorical": True,
        "feature_types": _feature_types(data),
        "tree_method": "hist",
        "n_jobs": data.n_jobs,
        "random_state": data.seed,
    }
    return _boost(estimator, params, data, common)


def _boost(estimator: Any, params: Mapping[str, Param], data: TrainData, common: Any) -> Any:
    """Fit with early stopping on the validation rows, then keep the trees up to the best."""
    if data.rounds is not None or data.X_val is None:
        rounds = data.rounds or _int(params, "n_estimators")
        return estimator(n_estimators=rounds, **common).fit(data.X, data.y)
    model = estimator(
        n_estimators=_int(params, "n_estimators"),
        early_stopping_rounds=_int(params, "early_stopping_rounds"),
        **common,
    )
    model.fit(data.X, data.y, eval_set=[(data.X_val, data.y_val)], verbose=False)
    # Keep only the trees up to the best iteration: the converter exports every tree it sees.
    best = model.get_booster()[: model.best_iteration + 1]
    final = estimator(**common)
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
            ladder=True,
            siblings=("xgb_small",),
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


def _typed_xgb_params(objective: str, n_estimators: int, max_depth: int) -> dict[str, Param]:
    return {
        "objective": objective,
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "learning_rate": 0.1,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 1.0,
        "max_cat_to_onehot": 1,
        "early_stopping_rounds": 20,
    }


PRICING_RECIPES: dict[str, Recipe] = {
    "pricing_sklearn": Recipe(
        "pricing_sklearn",
        "sklearn",
        "Weekly units sold: OneHotEncoder (3 string columns), 20 numeric columns as they are, "
        "HistGradientBoostingRegressor",
        {"loss": "squared_error", "max_iter": 80, "max_leaf_nodes": 31, "learning_rate": 0.2},
        _train_pricing_sklearn,
        task="regression",
        layout="columns",
        frame_input=True,
    ),
    "pricing_xgb": Recipe(
        "pricing_xgb",
        "xgboost",
        "Weekly units sold: XGBoost count:poisson with native categorical features "
        "(early stopping on validation)",
        {**_typed_xgb_params("count:poisson", 120, 5), "learning_rate": 0.25},
        _train_xgb_typed,
        task="regression",
    ),
}
"""Recipes for the demand data (:func:`export.data.pricing_dataset`), by model name."""

RETURNS_RECIPES: dict[str, Recipe] = {
    "returns_sklearn": Recipe(
        "returns_sklearn",
        "sklearn",
        "Return reason (5 classes): OneHotEncoder (3 string columns) + StandardScaler + "
        "multinomial LogisticRegression, fitted on the string labels",
        {"C": 1.0, "max_iter": 500},
        _train_returns_sklearn,
        task="multiclass",
        layout="columns",
        frame_input=True,
    ),
    "returns_xgb": Recipe(
        "returns_xgb",
        "xgboost",
        "Return reason (5 classes): XGBoost multi:softprob with native categorical features "
        "(early stopping on validation)",
        {**_typed_xgb_params("multi:softprob", 150, 4), "learning_rate": 0.2},
        _train_xgb_typed,
        task="multiclass",
    ),
}
"""Recipes for the returns data (:func:`export.data.returns_dataset`), by model name."""
