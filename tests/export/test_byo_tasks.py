"""Bring your own model, every kind: string columns, string labels, multiclass, regression,
XGBoost native categories, HistGradientBoosting categories.

Every model is trained here, outside the repository's recipes, on scikit-learn's bundled public
data sets (with string columns derived from them) or on generated ISLR-Default-like data. Each
published version is checked the way the server runs it: ONNX Runtime fed by
``server.columns.Codec(card.input).onnx_feeds`` on every hold-out row, against the native model's
predictions on the same rows' raw values, within the card's parity tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from export.byo import convert
from export.repository import load_holdout
from server.columns import UNSEEN_TEXT, Codec
from server.errors import ExportError, ParityError, UnsupportedEstimator
from server.modelcard import (
    BinaryMetrics,
    ModelCard,
    MulticlassMetrics,
    RegressionMetrics,
    load_card,
)

BUDGET = 0.01
"""Seconds per cost measurement: the tests check conversions, not speed."""


# --- public data with string columns -------------------------------------------------------


def default_data(n: int = 1_200, seed: int = 0) -> pd.DataFrame:
    """ISLR's Default data set, generated: student (Yes/No), balance, income; default Yes/No."""
    rng = np.random.default_rng(seed)
    student = rng.choice(["Yes", "No"], n, p=[0.3, 0.7])
    balance = np.clip(rng.normal(800, 450, n) + (student == "Yes") * 300, 0, None)
    income = np.where(student == "Yes", rng.normal(18_000, 5_000, n), rng.normal(40_000, 9_000, n))
    logit = -9.0 + 0.0055 * balance - 0.6 * (student == "Yes")
    default = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame(
        {
            "student": student,
            "balance": balance.round(2),
            "income": income.round(2),
            "default": default,
        }
    )


def diabetes_frame() -> pd.DataFrame:
    """load_diabetes with sex as "female"/"male" and BMI as a string band; target "progression"."""
    data = load_diabetes(scaled=False)
    frame = pd.DataFrame(data.data, columns=data.feature_names)
    frame["sex"] = np.where(frame["sex"] == 1, "female", "male")
    frame["bmi_band"] = pd.cut(
        frame["bmi"], [0, 25, 30, 100], labels=["normal", "overweight", "obese"]
    ).astype(str)
    frame["over_50"] = frame["age"] > 50
    frame["progression"] = data.target
    return frame


def cancer_frame() -> pd.DataFrame:
    """load_breast_cancer with a string size band and labels "malignant"/"benign"."""
    data = load_breast_cancer()
    frame = pd.DataFrame(data.data[:, :8], columns=[f"f{i}" for i in range(8)])
    frame["size_band"] = pd.qcut(data.data[:, 0], 3, labels=["small", "medium", "large"]).astype(
        str
    )
    frame["diagnosis"] = np.asarray(data.target_names)[data.target]
    return frame


def halves(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = np.random.default_rng(seed).permutation(len(frame))
    cut = len(frame) // 2
    return frame.iloc[rows[:cut]].reset_index(drop=True), frame.iloc[rows[cut:]].reset_index(
        drop=True
    )


def save(tmp_path: Path, model: Any, holdout: pd.DataFrame, name: str) -> tuple[Path, Path]:
    if isinstance(model, (xgb.XGBModel, xgb.Booster)):
        model_path = tmp_path / f"{name}.json"
        model.save_model(model_path)
    else:
        model_path = tmp_path / f"{name}.joblib"
        joblib.dump(model, model_path)
    csv_path = tmp_path / f"{name}.csv"
    holdout.to_csv(csv_path, index=False)
    return model_path, csv_path


# --- served versus native ------------------------------------------------------------------


def raw_frame(card: ModelCard, X: np.ndarray) -> pd.DataFrame:
    """The hold-out rows' raw values, as a user would give them to the native model."""
    codec = Codec(card.input)
    data: dict[str, Any] = {}
    for j, column in enumerate(card.input.columns):
        values = codec.decode_column(j, X[:, j])
        assert UNSEEN_TEXT not in list(values)
        data[column.name] = values
    return pd.DataFrame(data)


def served(card: ModelCard, version_dir: Path, X: np.ndarray) -> np.ndarray:
    """What the server computes: ONNX Runtime fed by the Codec, as float64 [n, k]."""
    sess = ort.InferenceSession(
        (version_dir / card.onnx.file).read_bytes(), providers=["CPUExecutionProvider"]
    )
    output = card.outputs.probabilities or card.outputs.value
    assert output is not None
    out = sess.run([output], Codec(card.input).onnx_feeds(X))[0]
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)


def assert_served_matches_native(models: Path, name: str, native: Any) -> ModelCard:
    """Every hold-out row: served answers within the card's parity tolerance of ``native``,
    a function of the raw-value DataFrame."""
    version_dir = models / name / "1"
    card = load_card(version_dir)
    X, y = load_holdout(version_dir)
    assert len(X) == card.parity.rows == card.dataset.rows_test
    want = np.asarray(native(raw_frame(card, X)), dtype=np.float64).reshape(len(X), -1)
    got = served(card, version_dir, X)
    assert got.shape == want.shape == (len(X), card.n_outputs)
    assert np.max(np.abs(got - want)) <= card.parity.tolerance
    if card.task == "regression":
        assert y.dtype == np.float64
    else:
        assert y.dtype == np.int64 and set(y.tolist()) <= set(range(len(card.classes)))
    return card


# --- the two crashes of the issue ----------------------------------------------------------


def test_columntransformer_by_name_with_string_column_and_string_labels(tmp_path: Path) -> None:
    """The issue's first two crashes: ColumnTransformer selecting by name, "Yes"/"No" labels."""
    train, holdout = halves(default_data())
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(), ["student"]),
                        ("num", StandardScaler(), ["balance", "income"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    )
    model.fit(train.drop(columns="default"), train["default"])
    model_path, csv_path = save(tmp_path, model, holdout, "default")
    models = tmp_path / "models"

    result = convert(model_path, csv_path, "default", "default", models, cost_budget_s=BUDGET)

    card = assert_served_matches_native(models, "default", model.predict_proba)
    assert result.card == card and card.task == "binary"
    assert card.classes == ["No", "Yes"] and card.positive_class == "Yes"
    assert card.input.layout == "columns"
    student, balance, income = card.input.columns
    assert (student.kind, student.dtype, student.categories) == (
        "categorical",
        "string",
        ["No", "Yes"],
    )
    assert student.unknown == "refuse"  # OneHotEncoder's default handle_unknown="error"
    assert balance.kind == income.kind == "numeric" and not balance.allow_missing
    assert isinstance(card.metrics, BinaryMetrics) and card.metrics.roc_auc > 0.8
    assert card.reference.features[0].category_counts is not None


def test_columntransformer_by_name_over_numbers_keeps_the_matrix(tmp_path: Path) -> None:
    """All-numeric ColumnTransformer by name: one float matrix input, as the server's fast path."""
    train, holdout = halves(default_data())
    features = ["balance", "income"]
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("num", MinMaxScaler(), features)])),
            ("clf", LogisticRegression()),
        ]
    )
    model.fit(train[features], train["default"])
    model_path, csv_path = save(tmp_path, model, holdout[[*features, "default"]], "numeric")
    convert(model_path, csv_path, "default", "numeric", tmp_path / "models", cost_budget_s=BUDGET)
    card = assert_served_matches_native(tmp_path / "models", "numeric", model.predict_proba)
    assert card.input.layout == "matrix" and card.input.numeric_only
    sess = ort.InferenceSession(
        (tmp_path / "models" / "numeric" / "1" / "model.onnx").read_bytes(),
        providers=["CPUExecutionProvider"],
    )
    assert [i.name for i in sess.get_inputs()] == ["input"]


def test_columntransformer_by_index_with_unseen_categories_served(tmp_path: Path) -> None:
    """Selection by index; handle_unknown="ignore" serves unseen categories (parity checked);
    an imputed numeric column takes missing values, the others do not."""
    frame = cancer_frame()
    train, holdout = halves(frame)
    n = len(frame.columns) - 1  # size_band is the last feature column
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [n - 1]),
                        (
                            "imputed",
                            Pipeline([("fill", SimpleImputer()), ("scale", StandardScaler())]),
                            [0],
                        ),
                        ("num", StandardScaler(), list(range(1, n - 1))),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1_000)),
        ]
    )
    model.fit(train.drop(columns="diagnosis"), train["diagnosis"])
    model_path, csv_path = save(tmp_path, model, holdout, "cancer")
    models = tmp_path / "models"

    with pytest.raises(ExportError, match=r"no obvious positive class.*--positive-class"):
        convert(model_path, csv_path, "diagnosis", "cancer", models)
    convert(
        model_path,
        csv_path,
        "diagnosis",
        "cancer",
        models,
        positive_class="malignant",
        cost_budget_s=BUDGET,
    )

    card = assert_served_matches_native(models, "cancer", model.predict_proba)
    assert card.classes == ["benign", "malignant"] and card.positive_class == "malignant"
    assert card.positive_index == 1
    by_name = {c.name: c for c in card.input.columns}
    assert by_name["size_band"].unknown == "serve"
    assert by_name["size_band"].categories == ["large", "medium", "small"]
    assert by_name["f0"].allow_missing and not by_name["f1"].allow_missing


# --- multiclass ----------------------------------------------------------------------------


def wine_forest() -> tuple[Pipeline, pd.DataFrame]:
    """load_wine with a string hue band and string cultivar labels: an OrdinalEncoder and a small
    random forest fitted on one half; returns the model and the other half (the hold-out)."""
    data = load_wine()
    frame = pd.DataFrame(data.data[:, :6], columns=[f"x{i}" for i in range(6)])
    frame["hue_band"] = pd.qcut(data.data[:, 10], 2, labels=["pale", "deep"]).astype(str)
    frame["cultivar"] = np.array(["barolo", "grignolino", "barbera"])[data.target]
    train, holdout = halves(frame)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("hue", OrdinalEncoder(), ["hue_band"])], remainder="passthrough"
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)),
        ]
    )
    model.fit(train.drop(columns="cultivar"), train["cultivar"])
    return model, holdout


def test_multiclass_sklearn_with_string_labels(tmp_path: Path) -> None:
    model, holdout = wine_forest()
    model_path, csv_path = save(tmp_path, model, holdout, "wine")

    convert(
        model_path,
        csv_path,
        "cultivar",
        "wine",
        tmp_path / "models",
        task="multiclass",
        cost_budget_s=BUDGET,
    )

    card = assert_served_matches_native(tmp_path / "models", "wine", model.predict_proba)
    assert card.task == "multiclass" and card.positive_class is None
    assert card.classes == ["barbera", "barolo", "grignolino"]
    metrics = card.metrics
    assert isinstance(metrics, MulticlassMetrics)
    assert metrics.macro_f1 > 0.8 and metrics.accuracy > metrics.baseline_accuracy
    assert len(metrics.pr_auc_per_class) == 3 and len(metrics.confusion_matrix) == 3
    assert sum(map(sum, metrics.confusion_matrix)) == card.dataset.rows_test
    assert card.reference.class_shares is not None


@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_multiclass_xgboost(tmp_path: Path, objective: str) -> None:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    frame["species"] = data.target
    train, holdout = halves(frame)
    model = xgb.XGBClassifier(n_estimators=8, max_depth=2, objective=objective, n_jobs=1)
    model.fit(train.drop(columns="species"), train["species"])
    model_path, csv_path = save(tmp_path, model, holdout, "iris")

    convert(model_path, csv_path, "species", "iris", tmp_path / "models", cost_budget_s=BUDGET)

    card = assert_served_matches_native(tmp_path / "models", "iris", model.predict_proba)
    assert card.framework == "xgboost" and card.task == "multiclass"
    assert card.classes == [0, 1, 2] and card.input.layout == "matrix"
    assert isinstance(card.metrics, MulticlassMetrics) and card.metrics.accuracy > 0.85


# --- regression ----------------------------------------------------------------------------


def test_regression_sklearn_pipeline_with_string_columns(tmp_path: Path) -> None:
    frame = diabetes_frame()
    train, holdout = halves(frame)
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
                    remainder="passthrough",  # over_50: True/False
                ),
            ),
            ("ridge", Ridge(alpha=1.0)),
        ]
    )
    model.fit(train.drop(columns="progression"), train["progression"])
    model_path, csv_path = save(tmp_path, model, holdout, "diabetes")

    convert(
        model_path, csv_path, "progression", "diabetes", tmp_path / "models", cost_budget_s=BUDGET
    )

    card = assert_served_matches_native(tmp_path / "models", "diabetes", model.predict)
    assert card.task == "regression" and card.classes == [] and card.positive_class is None
    assert card.outputs.value is not None and card.outputs.probabilities is None
    assert card.parity.relative_to is not None
    assert card.parity.tolerance == pytest.approx(1e-4 * card.parity.relative_to)
    metrics = card.metrics
    assert isinstance(metrics, RegressionMetrics)
    assert metrics.mae < metrics.baseline_mae and metrics.rmse < metrics.baseline_rmse
    assert 0.2 < metrics.r2 < 1.0 and metrics.mape is not None
    assert list(metrics.residual_quantiles) == ["p05", "p25", "p50", "p75", "p95"]
    sex = card.input.columns[card.input.feature_names.index("sex")]
    assert sex.categories == ["female", "male"] and sex.unknown == "serve"
    assert card.input.columns[-1].name == "over_50" and card.input.columns[-1].kind == "boolean"
    assert "True" in csv_path.read_text()


@pytest.mark.parametrize("objective", ["reg:squarederror", "count:poisson"])
def test_regression_xgboost(tmp_path: Path, objective: str) -> None:
    data = load_diabetes(scaled=False)
    frame = pd.DataFrame(data.data, columns=data.feature_names)
    # count:poisson gets a count target (visits a year, say), zeros included: no MAPE then
    frame["y"] = data.target if objective == "reg:squarederror" else np.floor(data.target / 40)
    train, holdout = halves(frame)
    model = xgb.XGBRegressor(n_estimators=20, max_depth=3, objective=objective, n_jobs=1)
    model.fit(train.drop(columns="y"), train["y"])
    model_path, csv_path = save(tmp_path, model, holdout, "reg")

    convert(model_path, csv_path, "y", "reg", tmp_path / "models", cost_budget_s=BUDGET)

    card = assert_served_matches_native(tmp_path / "models", "reg", model.predict)
    assert card.task == "regression" and card.estimator == "xgboost.XGBRegressor"
    assert card.input.allow_missing  # XGBoost takes NaN, and ONNX agrees
    metrics = card.metrics
    assert isinstance(metrics, RegressionMetrics) and metrics.mae < metrics.baseline_mae
    assert (metrics.mape is None) == (objective == "count:poisson")
    assert card.reference.target_mean is not None


# --- XGBoost native categories: the trap ---------------------------------------------------


def _xgb_categorical(frame: pd.DataFrame) -> tuple[xgb.XGBClassifier, pd.DataFrame]:
    model_frame = frame.copy()
    model_frame["size_band"] = pd.Categorical(model_frame["size_band"])
    train, holdout = halves(model_frame)
    model = xgb.XGBClassifier(
        n_estimators=15, max_depth=3, enable_categorical=True, tree_method="hist", n_jobs=1
    )
    y = (train["diagnosis"] == "malignant").astype(int)
    model.fit(train.drop(columns="diagnosis"), y)
    holdout = holdout.assign(diagnosis=(holdout["diagnosis"] == "malignant").astype(int))
    return model, holdout


def test_xgboost_native_categories_recorded_by_the_model(tmp_path: Path) -> None:
    """Categories come from the model file; raw values in the CSV are mapped to codes."""
    model, holdout = _xgb_categorical(cancer_frame())
    model_path, csv_path = save(tmp_path, model, holdout.astype({"size_band": str}), "cat")

    convert(model_path, csv_path, "diagnosis", "cat", tmp_path / "models", cost_budget_s=BUDGET)

    def native(frame: pd.DataFrame) -> Any:
        cats = model.get_booster().feature_names
        frame = frame[cats].copy()
        frame["size_band"] = pd.Categorical(
            frame["size_band"], categories=["large", "medium", "small"]
        )
        return model.predict_proba(frame)

    card = assert_served_matches_native(tmp_path / "models", "cat", native)
    band = card.input.columns[card.input.feature_names.index("size_band")]
    assert band.kind == "categorical" and band.categories == ["large", "medium", "small"]
    assert card.input.layout == "matrix" and band.dtype == "float32"
    assert band.unknown == "refuse"  # XGBoost 3 refuses a category it was not trained on
    assert band.allow_missing


def test_categorical_trap_codes_in_the_csv_are_refused(tmp_path: Path) -> None:
    """The issue's trap: the CSV holds category codes where the model knows raw values."""
    model, holdout = _xgb_categorical(cancer_frame())
    codes = holdout.assign(size_band=holdout["size_band"].cat.codes)
    model_path, csv_path = save(tmp_path, model, codes, "trap")
    with pytest.raises(
        ExportError,
        match=r"column 'size_band': 100% of its values \(e\.g\. \"[012]\".*are not among the "
        r"model's categories \(\"large\", \"medium\", \"small\"\).*not codes",
    ):
        convert(model_path, csv_path, "diagnosis", "trap", tmp_path / "models")
    assert not (tmp_path / "models" / "trap").exists() or not list(
        (tmp_path / "models" / "trap").glob("[0-9]*")
    )


def test_xgboost_trained_on_codes_needs_the_categories(tmp_path: Path) -> None:
    frame = cancer_frame()
    cats = ["small", "medium", "large"]
    frame["size_band"] = frame["size_band"].map({c: i for i, c in enumerate(cats)})
    train, holdout = halves(frame)
    features = [c for c in frame.columns if c != "diagnosis"]
    dtrain = xgb.DMatrix(
        train[features].to_numpy(np.float32),
        label=(train["diagnosis"] == "malignant").astype(int),
        feature_names=features,
        feature_types=["q"] * 8 + ["c"],
        enable_categorical=True,
    )
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, dtrain, num_boost_round=10
    )
    raw = holdout.assign(
        size_band=[cats[i] for i in holdout["size_band"]],
        diagnosis=(holdout["diagnosis"] == "malignant").astype(int),
    )
    model_path, csv_path = save(tmp_path, booster, raw, "codes")
    models = tmp_path / "models"
    with pytest.raises(
        ExportError, match=r"does not record its categories.*--categories size_band="
    ):
        convert(model_path, csv_path, "diagnosis", "codes", models)

    convert(
        model_path,
        csv_path,
        "diagnosis",
        "codes",
        models,
        categories={"size_band": list(cats)},
        cost_budget_s=BUDGET,
    )

    def native(frame: pd.DataFrame) -> Any:
        coded = frame.assign(size_band=frame["size_band"].map({c: i for i, c in enumerate(cats)}))
        dm = xgb.DMatrix(
            coded.to_numpy(np.float32),
            feature_names=features,
            feature_types=["q"] * 8 + ["c"],
            enable_categorical=True,
        )
        p = booster.predict(dm)
        return np.c_[1 - p, p]

    card = assert_served_matches_native(models, "codes", native)
    assert card.input.columns[-1].categories == cats


# --- HistGradientBoosting with categorical features ----------------------------------------


def test_hist_gradient_boosting_categorical_refused_naming_the_features(tmp_path: Path) -> None:
    """Integer-coded categories: converted, parity fails, the message names the features.
    String categories (encoded by the model itself): refused before converting."""
    frame = cancer_frame()
    coded = frame.assign(size_band=frame["size_band"].map({"small": 0, "medium": 1, "large": 2}))
    for name, data, features in (
        ("coded", coded, ["size_band"]),
        ("text", frame.astype({"size_band": "category"}), "from_dtype"),
    ):
        train, holdout = halves(data)
        model = HistGradientBoostingClassifier(
            max_iter=10, categorical_features=features, random_state=0
        )
        model.fit(train.drop(columns="diagnosis"), train["diagnosis"])
        model_path, csv_path = save(tmp_path, model, holdout, name)
        error = ParityError if name == "coded" else UnsupportedEstimator
        with pytest.raises(error, match=r"categorical features \['size_band'\]"):
            convert(
                model_path,
                csv_path,
                "diagnosis",
                name,
                tmp_path / "models",
                positive_class="malignant",
            )


def test_plain_decision_tree_on_numbers_keeps_the_v1_shape(tmp_path: Path) -> None:
    """A numeric binary 0/1 model converts as before: matrix layout, classes [0, 1]."""
    data = load_breast_cancer()
    frame = pd.DataFrame(data.data[:, :5], columns=[f"c{i}" for i in range(5)])
    frame["label"] = data.target
    train, holdout = halves(frame)
    model = DecisionTreeClassifier(max_depth=3, random_state=0)
    model.fit(train.drop(columns="label").to_numpy(np.float32), train["label"])
    model_path, csv_path = save(tmp_path, model, holdout, "tree")
    convert(model_path, csv_path, "label", "tree", tmp_path / "models", cost_budget_s=BUDGET)
    card = assert_served_matches_native(
        tmp_path / "models", "tree", lambda f: model.predict_proba(f.to_numpy(np.float32))
    )
    assert card.classes == [0, 1] and card.positive_class == 1 and card.input.layout == "matrix"


def test_int_categories_reach_onnx_as_int64(tmp_path: Path) -> None:
    """An encoder fitted on whole numbers: an int64 ONNX input; the unseen probe decides."""
    data = load_wine()
    frame = pd.DataFrame(data.data[:, :4], columns=["alcohol", "malic", "ash", "alcalinity"])
    frame["magnesium_band"] = np.digitize(data.data[:, 4], [90, 100, 110]) + 1
    frame["cultivar"] = data.target
    train, holdout = halves(frame)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("band", OneHotEncoder(handle_unknown="ignore"), ["magnesium_band"]),
                        ("num", StandardScaler(), ["alcohol", "malic", "ash", "alcalinity"]),
                    ]
                ),
            ),
            ("lr", LogisticRegression(max_iter=1_000)),
        ]
    )
    model.fit(train.drop(columns="cultivar"), train["cultivar"])
    model_path, csv_path = save(tmp_path, model, holdout, "bands")
    convert(model_path, csv_path, "cultivar", "bands", tmp_path / "models", cost_budget_s=BUDGET)
    card = assert_served_matches_native(tmp_path / "models", "bands", model.predict_proba)
    band = card.input.columns[-1]
    assert (band.kind, band.dtype, band.categories, band.unknown) == (
        "categorical",
        "int64",
        [1, 2, 3, 4],
        "serve",
    )
