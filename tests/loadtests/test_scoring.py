"""Response scoring: metrics against hand-computed values and scikit-learn, and the score log."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from loadtests.scoring import (
    HEADLINES,
    ScoreLog,
    average_precision,
    classification_summary,
    headline,
    latency_summary,
    multiclass_summary,
    regression_summary,
    roc_auc,
    summarize,
    task_summary,
    threshold_metrics,
)

Y = [1, 0, 1, 1, 0, 0]
S = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]


def test_hand_computed_values() -> None:
    # Ranked: + - + + - -; precision at each positive: 1, 2/3, 3/4; recall steps of 1/3.
    assert average_precision(Y, S) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # Positive/negative pairs ordered correctly: 3 + 2 + 2 of 9.
    assert roc_auc(Y, S) == pytest.approx(7 / 9)
    m = threshold_metrics(Y, S, 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_threshold_is_inclusive_and_empty_predictions_are_zero() -> None:
    assert threshold_metrics([1, 0], [0.5, 0.2], 0.5)["tp"] == 1
    none = threshold_metrics([1, 0], [0.1, 0.2], 0.9)
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    y = (rng.random(n) < 0.1 + 0.05 * seed).astype(np.int64)
    # Rounded scores create many ties, the case where AP definitions differ.
    scores = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2 if seed % 2 else 1)
    threshold = 0.45
    pred = scores >= threshold
    summary = classification_summary(y, scores, threshold)
    assert summary["pr_auc"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    assert summary["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert summary["precision"] == pytest.approx(precision_score(y, pred, zero_division=0))
    assert summary["recall"] == pytest.approx(recall_score(y, pred, zero_division=0))
    assert summary["f1"] == pytest.approx(f1_score(y, pred, zero_division=0))
    assert summary["rows"] == n and summary["positives"] == int(y.sum())


def test_degenerate_inputs() -> None:
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError, match="entries"):
        average_precision([0, 1], [0.5])


def test_latency_summary_uses_exact_times() -> None:
    lat = np.linspace(0.1, 1.0, 1000)
    s = latency_summary(lat)
    assert s["p50"] == pytest.approx(np.percentile(lat, 50))
    assert s["p99"] == pytest.approx(np.percentile(lat, 99))
    assert s["p99.9"] == pytest.approx(np.percentile(lat, 99.9))
    assert s["max"] == pytest.approx(1.0) and s["count"] == 1000
    assert latency_summary([]) == {"count": 0}


def _filled_log() -> ScoreLog:
    log = ScoreLog()
    # Request 1: rows 0-2; request 2: 503; request 3: rows 0 and 3 (row 0 again, same score).
    log.record_request(1.0, 200, 3)
    log.record_rows([0, 1, 2], [1, 0, 1], [0.9, 0.2, 0.6])
    log.record_request(5.0, 503, 2)
    log.record_request(2.0, 200, 2)
    log.record_rows([0, 3], [1, 0], [0.9, 0.7])
    log.record_request(9.0, 0, 1)  # connection error
    return log


def test_summarize_counts_errors_and_scores_distinct_rows() -> None:
    s = summarize(_filled_log(), threshold=0.5, duration_s=2.0)
    assert s["requests"] == 4 and s["ok"] == 2 and s["errors"] == 2
    assert s["error_rate"] == pytest.approx(0.5)
    assert s["rate_503"] == pytest.approx(0.25)
    assert s["status_counts"] == {"0": 1, "200": 2, "503": 1}
    assert s["throughput_rps"] == pytest.approx(2.0)
    assert s["rows_per_s"] == pytest.approx(2.5)  # 5 rows in ok requests over 2 s
    assert s["rows_answered"] == 5 and s["distinct_rows"] == 4
    assert s["max_repeat_diff"] == 0.0
    acc = s["accuracy"]
    assert acc["rows"] == 4
    # rows 0..3: labels 1,0,1,0, scores .9,.2,.6,.7 -> at 0.5: tp 2, fp 1
    assert acc["precision"] == pytest.approx(2 / 3) and acc["recall"] == pytest.approx(1.0)
    assert s["latency_ok_ms"]["max"] == pytest.approx(2.0)


def test_summarize_flags_inconsistent_repeats() -> None:
    log = ScoreLog()
    log.record_request(1.0, 200, 2)
    log.record_rows([7, 7], [1, 1], [0.8, 0.1])
    assert summarize(log, 0.5)["max_repeat_diff"] == pytest.approx(0.7)


def test_summarize_without_threshold_skips_accuracy() -> None:
    assert summarize(_filled_log(), None)["accuracy"] is None


def test_log_chunks_round_trip() -> None:
    log = _filled_log()
    offsets: dict[str, int] = {}
    first = log.export_since(offsets)
    log.record_request(3.0, 200, 1)
    log.record_rows([9], [0], [0.05])
    second = log.export_since(offsets)
    assert log.export_since(offsets)["keys"] == b""
    merged = ScoreLog()
    merged.extend_from(first)
    merged.extend_from(second)
    assert merged.lengths() == log.lengths()
    assert list(merged.scores) == list(log.scores)
    assert list(merged.statuses) == list(log.statuses)
    log.clear()
    assert set(log.lengths().values()) == {0}


def test_multiclass_summary_matches_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, size=400)
    proba = rng.dirichlet(np.ones(4), size=400)
    predicted = np.where(rng.random(400) < 0.6, y, proba.argmax(axis=1))
    predicted[predicted == 3] = 2  # class 3 is never predicted: its F1 is 0, still averaged
    s = multiclass_summary(y, predicted, proba[np.arange(400), y])
    assert s["rows"] == 400
    assert s["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert s["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert s["weighted_f1"] == pytest.approx(f1_score(y, predicted, average="weighted"))
    assert s["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1, 2, 3]))
    assert s["f1_per_class"]["3"] == 0.0
    assert math.isnan(multiclass_summary([0, 1], [0, 1], [0.5, math.nan])["log_loss"])


def test_regression_summary_matches_scikit_learn() -> None:
    rng = np.random.default_rng(6)
    y = rng.lognormal(3.0, 0.5, size=300)
    v = y + rng.normal(0.5, 4.0, size=300)
    s = regression_summary(y, v)
    assert s["mae"] == pytest.approx(mean_absolute_error(y, v))
    assert s["rmse"] == pytest.approx(root_mean_squared_error(y, v))
    assert s["r2"] == pytest.approx(r2_score(y, v))
    assert s["mape"] == pytest.approx(mean_absolute_percentage_error(y, v))
    assert s["bias"] == pytest.approx(float(np.mean(v - y)))
    # a target at zero: no MAPE (a percentage of nothing)
    assert regression_summary([0.0, 2.0], [0.5, 2.0])["mape"] is None


def test_summarize_scores_each_task_with_its_own_metrics() -> None:
    regression = ScoreLog()
    regression.record_request(1.0, 200, 3)
    regression.record_rows([0, 1, 2], [10.0, 20.0, 30.0], [12.0, 18.0, 30.0])
    regression.record_request(1.0, 200, 1)
    regression.record_rows([0], [10.0], [12.0])  # row 0 again, the same value
    s = summarize(regression, 0.5, task="regression")
    assert s["accuracy"]["task"] == "regression" and s["accuracy"]["rows"] == 3
    assert s["accuracy"]["mae"] == pytest.approx(4.0 / 3)
    assert s["accuracy"]["rmse"] == pytest.approx(math.sqrt(8.0 / 3))
    assert s["max_repeat_diff"] == 0.0

    multiclass = ScoreLog()
    multiclass.record_request(1.0, 200, 4)
    # true classes 0, 1, 2, 2; predicted 0, 1, 1, 2; scores of the true class
    multiclass.record_rows([0, 1, 2, 3], [0, 1, 2, 2], [0.8, 0.6, 0.3, 0.7], [0, 1, 1, 2])
    s = summarize(multiclass, 0.5, task="multiclass")
    acc = s["accuracy"]
    assert acc["task"] == "multiclass" and acc["accuracy"] == pytest.approx(0.75)
    assert acc["macro_f1"] == pytest.approx(f1_score([0, 1, 2, 2], [0, 1, 1, 2], average="macro"))
    # the same row answered with another class later is a repeat mismatch
    multiclass.record_request(1.0, 200, 1)
    multiclass.record_rows([1], [1], [0.6], [2])
    assert summarize(multiclass, 0.5, task="multiclass")["max_repeat_diff"] == 1.0
    with pytest.raises(ValueError):
        task_summary("ranking", [1], [1.0])


def test_headline_metric_per_task() -> None:
    assert headline("binary").key == "pr_auc" and headline(None).key == "pr_auc"
    assert headline("multiclass").name == "macro-F1"
    mae = HEADLINES["regression"]
    assert mae.key == "mae" and not mae.higher_is_better
    assert mae.goodness(2.0) > mae.goodness(3.0)
