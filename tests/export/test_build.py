"""Bundled builds: idempotent by fingerprint, honest cards, progress on stderr."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from export.build import BUNDLED, BuildSettings, build_model, fingerprint, split_rows
from export.data import RETURN_REASONS, Dataset, fraud_dataset, pricing_dataset, returns_dataset
from export.recipes import PRICING_RECIPES, RECIPES, RETURNS_RECIPES
from export.repository import load_holdout, model_versions, valid_cards
from export.splits import stratified_split
from server.columns import Codec
from server.modelcard import (
    BinaryMetrics,
    ModelCard,
    MulticlassMetrics,
    RegressionMetrics,
    load_card,
)


def test_same_inputs_make_no_new_version(small_fraud: Dataset, settings: BuildSettings) -> None:
    first = build_model(RECIPES["logreg"], small_fraud, settings)
    again = build_model(RECIPES["logreg"], fraud_dataset(len(small_fraud.y), seed=0), settings)
    assert first.published and not again.published
    assert again.card.fingerprint == first.card.fingerprint
    assert model_versions(settings.models_dir, "logreg") == [1]


def test_changed_inputs_make_a_new_version(small_fraud: Dataset, settings: BuildSettings) -> None:
    recipe = RECIPES["logreg"]
    build_model(recipe, small_fraud, settings)
    stronger = dataclasses.replace(recipe, params={**recipe.params, "C": 0.1})
    second = build_model(stronger, small_fraud, settings)
    third = build_model(stronger, small_fraud, dataclasses.replace(settings, seed=1))
    more_rows = build_model(
        stronger, fraud_dataset(3_500, seed=0), dataclasses.replace(settings, seed=1)
    )
    assert [second.card.version, third.card.version, more_rows.card.version] == [2, 3, 4]
    assert len({second.card.fingerprint, third.card.fingerprint, more_rows.card.fingerprint}) == 3
    assert second.card.params["C"] == 0.1


def test_fingerprint_is_stable(small_fraud: Dataset, tmp_path: Path) -> None:
    settings = BuildSettings(models_dir=tmp_path)
    assert fingerprint(RECIPES["mlp"], small_fraud, settings) == fingerprint(
        RECIPES["mlp"], small_fraud, BuildSettings(models_dir=tmp_path / "elsewhere", n_jobs=1)
    )


def test_card_and_holdout_are_the_untouched_test_split(
    small_fraud: Dataset, settings: BuildSettings
) -> None:
    card = build_model(RECIPES["xgb_small"], small_fraud, settings).card
    split = stratified_split(small_fraud.y, settings.seed)
    X, y = load_holdout(settings.models_dir / "xgb_small" / "1")
    assert np.array_equal(X, small_fraud.X[split.test]) and np.array_equal(
        y, small_fraud.y[split.test]
    )
    d = card.dataset
    assert (d.rows_train, d.rows_validation, d.rows_test) == (
        len(split.train),
        len(split.validation),
        len(split.test),
    )
    assert d.rows_train + d.rows_validation + d.rows_test == len(small_fraud.y)
    m = card.metrics
    assert isinstance(m, BinaryMetrics) and card.task == "binary"
    assert m.cv_pr_auc_mean is None and m.cv_pr_auc_std is None  # not run: null, not a guess
    assert m.baseline_accuracy == pytest.approx(1 - y.mean())
    assert m.positive_rate_test == pytest.approx(y.mean())
    assert card.input.allow_missing  # XGBoost handles NaN and ONNX matches it
    assert card.estimator == "xgboost.XGBClassifier" and card.framework == "xgboost"
    assert card.input.feature_names == small_fraud.feature_names
    assert 1 <= int(card.params["trees_after_early_stopping"] or 0) <= 50
    assert card.reference.base_rate == pytest.approx(small_fraud.y[split.train].mean())


def test_linear_model_refuses_missing_values(small_fraud: Dataset, settings: BuildSettings) -> None:
    card = build_model(RECIPES["logreg"], small_fraud, settings).card
    assert not card.input.allow_missing
    assert card.estimator == "sklearn.pipeline.Pipeline"


def test_a_build_that_fails_while_publishing_leaves_no_version(
    small_fraud: Dataset, settings: BuildSettings
) -> None:
    def disk_full(tmp_dir: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        build_model(RECIPES["logreg"], small_fraud, settings, before_rename=disk_full)
    assert model_versions(settings.models_dir, "logreg") == []
    assert list((settings.models_dir / "logreg").iterdir()) == []
    assert build_model(RECIPES["logreg"], small_fraud, settings).card.version == 1


def test_cross_validation_only_when_asked(small_fraud: Dataset, settings: BuildSettings) -> None:
    recipe = RECIPES["logreg"]
    quick = build_model(recipe, small_fraud, settings)
    assert isinstance(quick.card.metrics, BinaryMetrics)
    assert quick.card.metrics.cv_pr_auc_mean is None
    assert [c.name for c in valid_cards(settings.models_dir)] == ["logreg"]

    full_settings = dataclasses.replace(settings, cross_validate=True)
    full = build_model(recipe, small_fraud, full_settings)
    assert full.published and full.card.version == 2  # the card gains the number it lacked
    m = full.card.metrics
    assert isinstance(m, BinaryMetrics)
    assert m.cv_pr_auc_mean is not None and 0.0 <= m.cv_pr_auc_mean <= 1.0
    assert m.cv_pr_auc_std is not None
    assert m.pr_auc == quick.card.metrics.pr_auc  # the same model, evaluated the same way

    # Neither a quick nor a full build replaces a version that already has it.
    assert not build_model(recipe, small_fraud, settings).published
    assert not build_model(recipe, small_fraud, full_settings).published
    assert model_versions(settings.models_dir, "logreg") == [1, 2]


# --- the e-commerce models: typed columns, regression and multiclass -----------------------------

TYPED_ROWS = 2_500


@pytest.fixture(scope="module")
def small_pricing() -> Dataset:
    return pricing_dataset(TYPED_ROWS, seed=0)


@pytest.fixture(scope="module")
def small_returns() -> Dataset:
    return returns_dataset(TYPED_ROWS, seed=0)


TYPED = [
    ("pricing_sklearn", "columns", "sklearn.pipeline.Pipeline"),
    ("pricing_xgb", "matrix", "xgboost.XGBRegressor"),
    ("returns_sklearn", "columns", "sklearn.pipeline.Pipeline"),
    ("returns_xgb", "matrix", "xgboost.XGBClassifier"),
]


def _onnx_outputs(version_dir: Path, card: ModelCard, X: np.ndarray) -> np.ndarray:
    """What the server computes: the row matrix fed to ONNX Runtime through the card's Codec."""
    import onnxruntime as ort

    sess = ort.InferenceSession(
        (version_dir / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"]
    )
    name = card.outputs.value or card.outputs.probabilities
    out = sess.run([name], Codec(card.input).onnx_feeds(X))[0]
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)


@pytest.mark.parametrize(("name", "layout", "estimator"), TYPED)
def test_typed_models_publish_honest_cards(
    name: str,
    layout: str,
    estimator: str,
    small_pricing: Dataset,
    small_returns: Dataset,
    settings: BuildSettings,
) -> None:
    data = small_pricing if name.startswith("pricing") else small_returns
    recipes = PRICING_RECIPES if name.startswith("pricing") else RETURNS_RECIPES
    card = build_model(recipes[name], data, settings).card
    version_dir = settings.models_dir / name / "1"
    assert load_card(version_dir) == card  # valid on disk, as the server reads it

    assert card.task == data.task and card.estimator == estimator
    assert card.input.layout == layout
    columns = card.input.columns
    assert [c.name for c in columns] == data.feature_names
    assert [c.kind for c in columns] == [c.kind for c in data.input_columns]
    for column, source in zip(columns, data.input_columns, strict=True):
        assert column.categories == source.categories
        if column.kind == "categorical":
            # string inputs for a pipeline, codes in the matrix for XGBoost
            assert column.dtype == ("string" if layout == "columns" else "float32")
            # OneHotEncoder(handle_unknown="ignore") and XGBoost both answer an unseen value
            assert column.unknown == "serve"
        else:
            assert column.dtype == "float32"

    split = split_rows(data, settings.seed)
    X, y = load_holdout(version_dir)
    assert np.array_equal(X, data.X[split.test]) and np.array_equal(y, data.y[split.test])
    assert card.dataset.rows_test == len(split.test) and card.dataset.positive_rate_train is None
    features = {f.name: f for f in card.reference.features}
    for column in columns:
        if column.kind == "categorical":
            counts = features[column.name].category_counts
            assert counts is not None and sum(counts) == len(split.train)

    # The published metrics are the served model's, on the untouched test rows.
    out = _onnx_outputs(version_dir, card, X)
    m = card.metrics
    if data.task == "regression":
        assert isinstance(m, RegressionMetrics)
        assert card.classes == [] and card.positive_class is None and card.outputs.value
        assert m.mae == pytest.approx(np.mean(np.abs(out[:, 0] - y)), rel=1e-6)
        assert m.r2 > 0.6 and m.mae < 0.7 * m.baseline_mae  # far better than the median
        assert card.parity.relative_to is not None
    else:
        assert isinstance(m, MulticlassMetrics)
        assert card.classes == list(RETURN_REASONS) and card.positive_class is None
        assert out.shape == (len(y), len(RETURN_REASONS))
        assert m.accuracy == pytest.approx(np.mean(np.argmax(out, axis=1) == y))
        assert m.accuracy > m.baseline_accuracy + 0.1
        assert m.cv_macro_f1_mean is None  # not asked for
    assert card.parity.max_abs_diff <= card.parity.tolerance


def test_regression_split_covers_the_target_range(small_pricing: Dataset) -> None:
    split = split_rows(small_pricing, seed=0)
    y = small_pricing.y
    parts = [split.train, split.validation, split.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    means = [y[p].mean() for p in parts]
    assert max(means) - min(means) < 0.1 * y.mean()  # stratified by target decile
    assert all(y[p].max() > np.quantile(y, 0.95) for p in parts)


def test_typed_build_is_idempotent_and_shift_makes_a_new_version(
    small_returns: Dataset, settings: BuildSettings
) -> None:
    recipe = RETURNS_RECIPES["returns_sklearn"]
    first = build_model(recipe, small_returns, settings)
    again = build_model(recipe, returns_dataset(TYPED_ROWS, seed=0), settings)
    assert first.published and not again.published
    shifted = build_model(recipe, returns_dataset(TYPED_ROWS, seed=0, shift=0.5), settings)
    assert shifted.published and shifted.card.version == 2
    assert shifted.card.fingerprint != first.card.fingerprint
    assert model_versions(settings.models_dir, "returns_sklearn") == [1, 2]


@pytest.mark.parametrize("name", ["returns_sklearn", "pricing_xgb"])
def test_cross_validation_of_the_other_tasks(
    name: str, small_pricing: Dataset, small_returns: Dataset, settings: BuildSettings
) -> None:
    data = small_pricing if name.startswith("pricing") else small_returns
    recipe = {**PRICING_RECIPES, **RETURNS_RECIPES}[name]
    quick = build_model(recipe, data, settings)
    full = build_model(recipe, data, dataclasses.replace(settings, cross_validate=True))
    assert full.published and full.card.version == 2
    m = full.card.metrics
    if isinstance(m, MulticlassMetrics):
        assert m.cv_macro_f1_mean is not None and 0.2 < m.cv_macro_f1_mean < 1.0
        assert m.cv_macro_f1_std is not None
    else:
        assert isinstance(m, RegressionMetrics) and isinstance(
            quick.card.metrics, RegressionMetrics
        )
        assert m.cv_mae_mean is not None and m.cv_mae_mean < m.baseline_mae
        assert m.mae == quick.card.metrics.mae  # the same model, evaluated the same way
    assert not build_model(recipe, data, settings).published  # it keeps the number


def test_the_bundled_build_includes_the_ecommerce_models(small_fraud: Dataset) -> None:
    for name in ("pricing_sklearn", "pricing_xgb", "returns_sklearn", "returns_xgb"):
        assert name in BUNDLED
    with pytest.raises(ValueError, match="regression recipe"):
        build_model(PRICING_RECIPES["pricing_xgb"], small_fraud, BuildSettings(Path("unused")))
