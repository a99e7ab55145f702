"""Honest evaluation: a threshold chosen on validation, metrics on the untouched test split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold

from server.modelcard import BinaryMetrics


def f1_optimal_threshold(y_val: NDArray[np.int64], p_val: NDArray[np.float64]) -> float:
    """The score threshold that maximises F1 on the validation split."""
    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    if len(thresholds) == 0:
        return 0.5
    p, r = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(min(max(thresholds[int(np.argmax(f1))], 0.0), 1.0))


def holdout_metrics(
    y_test: NDArray[np.int64],
    p_test: NDArray[np.float64],
    threshold: float,
    cv_scores: list[float] | None = None,
    threshold_rule: str = "f1-optimal on validation",
) -> BinaryMetrics:
    """Metrics of positive-class scores ``p_test`` on the test labels at ``threshold``."""
    predicted = (p_test >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(y_test, predicted, labels=[0, 1]).tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    positive_rate = float(np.mean(y_test))
    return BinaryMetrics(
        threshold=threshold,
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        roc_auc=float(roc_auc_score(y_test, p_test)),
        pr_auc=float(average_precision_score(y_test, p_test)),
        log_loss=float(log_loss(y_test, np.clip(p_test, 1e-15, 1 - 1e-15), labels=[0, 1])),
        brier=float(brier_score_loss(y_test, p_test)),
        accuracy=float((tp + tn) / len(y_test)),
        baseline_accuracy=max(positive_rate, 1.0 - positive_rate),
        confusion_matrix=[[int(tn), int(fp)], [int(fn), int(tp)]],
        positive_rate_test=positive_rate,
        cv_pr_auc_mean=float(np.mean(cv_scores)) if cv_scores else None,
        cv_pr_auc_std=float(np.std(cv_scores)) if cv_scores else None,
        threshold_rule=threshold_rule,
    )


def cross_validated_pr_auc(
    fit: Callable[[NDArray[np.float32], NDArray[np.int64]], Any],
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    seed: int,
    folds: int = 3,
) -> list[float]:
    """PR-AUC (average precision) of each fold; ``fit(X, y)`` returns a fitted model."""
    scores: list[float] = []
    for fit_idx, score_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        model = fit(X[fit_idx], y[fit_idx])
        p = np.asarray(model.predict_proba(X[score_idx]))[:, 1]
        scores.append(float(average_precision_score(y[score_idx], p)))
    return scores
