"""Honest evaluation: a threshold chosen on validation, metrics on the untouched test split.

One function per task: :func:`holdout_metrics` (binary), :func:`multiclass_metrics`,
:func:`regression_metrics`. Scores come from the ONNX model, i.e. from what the server serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold

from server.modelcard import BinaryMetrics, MulticlassMetrics, RegressionMetrics


def f1_optimal_threshold(y_val: NDArray[np.int64], p_val: NDArray[np.float64]) -> float:
    """The score threshold that maximises F1 on the validation split."""
    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    if len(thresholds) == 0:
        return 0.5
    p, r = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return float(min(max(thresholds[int(np.argmax(f1))], 0.0), 1.0))


def recall_at(y_val: NDArray[np.int64], p_val: NDArray[np.float64], threshold: float) -> float:
    """Recall of the rule ``score >= threshold``."""
    positives = np.asarray(p_val)[np.asarray(y_val) == 1]
    return float(np.mean(positives >= threshold)) if positives.size else 0.0


def recall_matched_threshold(
    y_val: NDArray[np.int64], p_val: NDArray[np.float64], recall: float
) -> float:
    """The highest score threshold whose recall on the validation split reaches ``recall``: a
    cheaper variant's decision rule that misses no more positives than the full model does,
    paying in precision instead."""
    positives = np.sort(np.asarray(p_val, dtype=np.float64)[np.asarray(y_val) == 1])[::-1]
    if positives.size == 0:
        return 0.5
    k = min(max(int(np.ceil(recall * positives.size - 1e-9)), 1), positives.size)
    return float(min(max(positives[k - 1], 0.0), 1.0))


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


def multiclass_metrics(
    y_test: NDArray[np.int64],
    proba: NDArray[np.float64],
    y_reference: NDArray[np.int64],
    cv_scores: list[float] | None = None,
) -> MulticlassMetrics:
    """Metrics of the argmax label of class probabilities ``proba`` [n, k] on the test class
    indices ``y_test``; the baseline predicts the most frequent class of ``y_reference``."""
    k = proba.shape[1]
    labels = list(range(k))
    predicted = np.argmax(proba, axis=1)
    majority = int(np.argmax(np.bincount(y_reference, minlength=k)))
    onehot = np.eye(k, dtype=np.int64)[y_test]
    pr_auc = [
        float(average_precision_score(onehot[:, c], proba[:, c])) if onehot[:, c].any() else 0.0
        for c in labels
    ]
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return MulticlassMetrics(
        accuracy=float(np.mean(predicted == y_test)),
        baseline_accuracy=float(np.mean(y_test == majority)),
        macro_f1=float(
            f1_score(y_test, predicted, labels=labels, average="macro", zero_division=0)
        ),
        weighted_f1=float(
            f1_score(y_test, predicted, labels=labels, average="weighted", zero_division=0)
        ),
        log_loss=float(log_loss(y_test, clipped, labels=labels)),
        pr_auc_per_class=pr_auc,
        macro_pr_auc=float(np.mean(pr_auc)),
        confusion_matrix=confusion_matrix(y_test, predicted, labels=labels).tolist(),
        class_rates_test=[float(r) for r in np.bincount(y_test, minlength=k) / len(y_test)],
        cv_macro_f1_mean=float(np.mean(cv_scores)) if cv_scores else None,
        cv_macro_f1_std=float(np.std(cv_scores)) if cv_scores else None,
    )


MAPE_FLOOR = 1e-3
"""MAPE is left out (None) when a test target is within this share of the targets' mean
magnitude of zero: a percentage of a value near zero says nothing."""
RESIDUAL_QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}


def regression_metrics(
    y_test: NDArray[np.float64],
    predicted: NDArray[np.float64],
    y_reference: NDArray[np.float64],
    cv_scores: list[float] | None = None,
) -> RegressionMetrics:
    """Errors of ``predicted`` on the test targets, beside always predicting the reference
    (training) target's median (MAE) or mean (RMSE)."""
    y = np.asarray(y_test, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    residual = p - y
    ref = np.asarray(y_reference, dtype=np.float64)
    magnitude = np.abs(y)
    near_zero = magnitude.min() <= MAPE_FLOOR * max(float(magnitude.mean()), 1e-300)
    total = float(np.sum((y - y.mean()) ** 2))
    return RegressionMetrics(
        mae=float(np.mean(np.abs(residual))),
        rmse=float(np.sqrt(np.mean(residual**2))),
        r2=1.0 - float(np.sum(residual**2)) / total if total > 0 else 0.0,
        mape=None if near_zero else float(np.mean(np.abs(residual) / magnitude)),
        residual_quantiles={
            key: float(np.quantile(residual, q)) for key, q in RESIDUAL_QUANTILES.items()
        },
        baseline_mae=float(np.mean(np.abs(y - np.median(ref)))),
        baseline_rmse=float(np.sqrt(np.mean((y - ref.mean()) ** 2))),
        target_mean=float(y.mean()),
        target_std=float(y.std()),
        cv_mae_mean=float(np.mean(cv_scores)) if cv_scores else None,
        cv_mae_std=float(np.std(cv_scores)) if cv_scores else None,
    )
