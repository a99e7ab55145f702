"""Threshold choice and test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from export.evaluate import f1_optimal_threshold, holdout_metrics


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
