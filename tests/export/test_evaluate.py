"""Threshold choice and test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from export.evaluate import (
    f1_optimal_threshold,
    holdout_metrics,
    multiclass_metrics,
    regression_metrics,
)


def test_f1_optimal_threshold_separates_perfectly_ranked_scores() -> None:
    y = np.array([0, 0, 0, 0, 1, 1], dtype=np.int64)
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    threshold = f1_optimal_threshold(y, p)
    assert 0.35 < threshold <= 0.8
    assert holdout_metrics(y, p, threshold).f1 == 1.0


def test_metrics_put_accuracy_beside_the_majority_baseline() -> None:
    y = np.array([0] * 95 + [1] * 5, dtype=np.int64)
    p = np.r_[np.full(95, 0.1), [0.9, 0.9, 0.05, 0.05, 0.05]]
    m = holdout_metrics(y, p, threshold=0.5, cv_scores=[0.4, 0.6])
    assert m.confusion_matrix == [[95, 0], [3, 2]]
    assert m.precision == 1.0 and m.recall == pytest.approx(0.4)
    assert m.accuracy == pytest.approx(0.97) and m.baseline_accuracy == pytest.approx(0.95)
    assert m.cv_pr_auc_mean == pytest.approx(0.5) and m.cv_pr_auc_std == pytest.approx(0.1)
    assert 0.0 < m.brier < 0.1 and m.log_loss > 0.0 and m.positive_rate_test == 0.05


def test_multiclass_metrics_against_the_majority_baseline() -> None:
    y = np.array([0, 0, 0, 1, 1, 2], dtype=np.int64)
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.1, 0.8],
        ]
    )
    m = multiclass_metrics(y, proba, y_reference=np.array([1, 1, 1, 0], dtype=np.int64))
    assert m.confusion_matrix == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert m.accuracy == pytest.approx(5 / 6) and m.baseline_accuracy == pytest.approx(2 / 6)
    assert m.pr_auc_per_class[2] == 1.0 and len(m.pr_auc_per_class) == 3
    assert m.macro_f1 == pytest.approx((0.8 + 0.8 + 1.0) / 3)
    assert m.class_rates_test == pytest.approx([0.5, 2 / 6, 1 / 6]) and m.log_loss > 0


def test_regression_metrics_and_mape_only_away_from_zero() -> None:
    y = np.array([10.0, 20.0, 30.0, 40.0])
    m = regression_metrics(y, y + np.array([1.0, -1.0, 2.0, -2.0]), y_reference=y)
    assert m.mae == pytest.approx(1.5) and m.rmse == pytest.approx(np.sqrt(2.5))
    assert m.r2 == pytest.approx(1 - 10 / 500)
    assert m.mape == pytest.approx(np.mean([0.1, 0.05, 2 / 30, 0.05]))
    assert m.baseline_mae == pytest.approx(10.0) and m.baseline_rmse == pytest.approx(np.sqrt(125))
    assert m.residual_quantiles["p50"] == pytest.approx(0.0)
    counts = regression_metrics(np.array([0.0, 1.0, 3.0]), np.array([0.5, 1.0, 2.0]), y_reference=y)
    assert counts.mape is None
