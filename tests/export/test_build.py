"""Bundled builds: idempotent by fingerprint, honest cards, progress on stderr."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from export.build import BuildSettings, build_model, fingerprint
from export.data import Dataset, fraud_dataset
from export.recipes import RECIPES
from export.repository import load_holdout, model_versions, valid_cards
from export.splits import stratified_split


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
    assert quick.card.metrics.cv_pr_auc_mean is None
    assert [c.name for c in valid_cards(settings.models_dir)] == ["logreg"]

    full_settings = dataclasses.replace(settings, cross_validate=True)
    full = build_model(recipe, small_fraud, full_settings)
    assert full.published and full.card.version == 2  # the card gains the number it lacked
    m = full.card.metrics
    assert m.cv_pr_auc_mean is not None and 0.0 <= m.cv_pr_auc_mean <= 1.0
    assert m.cv_pr_auc_std is not None
    assert m.pr_auc == quick.card.metrics.pr_auc  # the same model, evaluated the same way

    # Neither a quick nor a full build replaces a version that already has it.
    assert not build_model(recipe, small_fraud, settings).published
    assert not build_model(recipe, small_fraud, full_settings).published
    assert model_versions(settings.models_dir, "logreg") == [1, 2]
