"""Scoring what the server returned: each task's own metrics and latency, in numpy only.

The locustfile appends one entry per answered row (a key, what the row is scored against, what
the server answered) and one entry per request (latency, status, rows) to a :class:`ScoreLog`;
nothing is computed on the request path. What a row entry holds depends on the model's task:

==========  =============================  ==============================================
task        ``labels``                     ``scores`` (``predicted``)
==========  =============================  ==============================================
binary      true class index (0/1)         the returned positive-class score
multiclass  true class index               the score returned for the true class
                                           (``predicted``: the answer's label, as index)
regression  the target                     the returned ``value``
==========  =============================  ==============================================

At the end of a run :func:`summarize` turns the log into the figures the report shows, per task
(:func:`task_summary`): binary precision, recall and F1 at the model card's threshold, PR-AUC
(average precision, the same definition as ``sklearn.metrics.average_precision_score``) and
ROC-AUC; multiclass accuracy, macro and weighted F1 and log-loss; regression MAE, RMSE, R² and
MAPE; with the error and 503 rates and exact latency percentiles.

This module imports neither Locust nor gevent, so the tests exercise it in-process.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

LATENCY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)
Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class Headline:
    """The one figure that says how accurate a model of a task is (ranking, plots, budget)."""

    key: str
    """The summary's key: ``pr_auc``, ``macro_f1`` or ``mae``."""
    name: str
    """As a person reads it: 'PR-AUC', 'macro-F1', 'MAE'."""
    higher_is_better: bool

    def goodness(self, value: float) -> float:
        """``value`` turned so that larger is always better (for ranking and the frontier)."""
        return value if self.higher_is_better else -value


HEADLINES: dict[str, Headline] = {
    "binary": Headline("pr_auc", "PR-AUC", True),
    "multiclass": Headline("macro_f1", "macro-F1", True),
    "regression": Headline("mae", "MAE", False),
}
"""Binary: ranking quality of the positive class (what matters on imbalanced data such as
fraud); multiclass: F1 averaged over classes, so a rare class counts as much as a common one;
regression: mean absolute error, in the target's own units."""


def headline(task: str | None) -> Headline:
    """The headline metric of ``task`` (binary when unknown: results written before tasks)."""
    return HEADLINES.get(task or "binary", HEADLINES["binary"])


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the precision-recall curve as a step sum: ``sum_n (R_n - R_{n-1}) P_n``.

    Thresholds are the distinct scores, so tied scores enter together (as in scikit-learn).
    Returns NaN when there is no positive example.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} entries, scores {s.size}")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # The last index of each run of equal scores is where that threshold's counts are read.
    last_of_tie = np.flatnonzero(np.diff(s_sorted) != 0)
    last_of_tie = np.append(last_of_tie, s.size - 1)
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_step = np.diff(recall, prepend=0.0)
    return float(np.sum(recall_step * precision))


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank (1-based) over each run of tied scores.
    boundaries = np.flatnonzero(np.diff(s_sorted) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and accuracy when rows scoring ``>= threshold`` are called positive.

    A ratio with a zero denominator is 0 (scikit-learn's ``zero_division=0``).
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    predicted = s >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(y.size - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / y.size if y.size else float("nan")
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def classification_summary(
    y_true: ArrayLike, scores: ArrayLike, threshold: float
) -> dict[str, float]:
    """Everything the report compares with the model card's offline metrics."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    out = threshold_metrics(y, s, threshold)
    out["pr_auc"] = average_precision(y, s)
    out["roc_auc"] = roc_auc(y, s)
    out["rows"] = int(y.size)
    out["positives"] = int(np.sum(y.astype(bool)))
    out["threshold"] = float(threshold)
    return out


def multiclass_summary(
    y_true: ArrayLike, predicted: ArrayLike, true_class_scores: ArrayLike | None = None
) -> dict[str, Any]:
    """Accuracy, macro and weighted F1 of predicted class indices; log-loss from the score each
    row's true class got (NaN when not given).

    F1 is averaged over the classes present in the true or the predicted labels (scikit-learn's
    default for ``f1_score(average="macro")``); a ratio with a zero denominator is 0.
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} entries, predicted {p.size}")
    out: dict[str, Any] = {"rows": int(y.size)}
    if y.size == 0:
        return out | {"accuracy": float("nan"), "macro_f1": float("nan")}
    classes = np.union1d(y, p)
    f1s, support = [], []
    for c in classes.tolist():
        tp = int(np.sum((p == c) & (y == c)))
        fp = int(np.sum((p == c) & (y != c)))
        fn = int(np.sum((p != c) & (y == c)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        support.append(tp + fn)
    f1 = np.asarray(f1s)
    weights = np.asarray(support, dtype=np.float64)
    out["accuracy"] = float(np.mean(y == p))
    out["macro_f1"] = float(f1.mean())
    out["weighted_f1"] = float((f1 * weights).sum() / weights.sum()) if weights.sum() else 0.0
    out["f1_per_class"] = {str(c): float(v) for c, v in zip(classes.tolist(), f1s, strict=True)}
    counts = np.bincount(y)
    out["majority_share"] = float(counts.max() / y.size)
    if true_class_scores is not None:
        s = np.asarray(true_class_scores, dtype=np.float64).ravel()
        out["log_loss"] = (
            float(-np.mean(np.log(np.clip(s, 1e-15, 1.0))))
            if s.size == y.size and not np.isnan(s).any()
            else float("nan")
        )
    return out


def regression_summary(y_true: ArrayLike, predicted: ArrayLike) -> dict[str, Any]:
    """MAE, RMSE, R², the mean residual (bias), the largest error and MAPE of predicted values.

    MAPE is None when the target has values at or near zero (below a millionth of its mean
    absolute value), where a percentage error means nothing.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    v = np.asarray(predicted, dtype=np.float64).ravel()
    if y.shape != v.shape:
        raise ValueError(f"y_true has {y.size} entries, predicted {v.size}")
    if y.size == 0:
        return {"rows": 0, "mae": float("nan"), "rmse": float("nan")}
    residual = v - y
    abs_err = np.abs(residual)
    sst = float(np.sum((y - y.mean()) ** 2))
    scale = float(np.mean(np.abs(y)))
    near_zero = scale == 0.0 or float(np.min(np.abs(y))) <= 1e-6 * scale
    return {
        "rows": int(y.size),
        "mae": float(abs_err.mean()),
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "r2": 1.0 - float(np.sum(residual**2)) / sst if sst > 0 else float("nan"),
        "mape": None if near_zero else float(np.mean(abs_err / np.abs(y))),
        "bias": float(residual.mean()),
        "max_abs_error": float(abs_err.max()),
        "target_mean": float(y.mean()),
    }


def task_summary(
    task: str,
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    threshold: float = 0.5,
    predicted: ArrayLike | None = None,
) -> dict[str, Any]:
    """The task's own metrics of answered rows, tagged with ``task`` (see the module's table)."""
    if task == "regression":
        out = regression_summary(labels, scores)
    elif task == "multiclass":
        if predicted is None:
            raise ValueError("a multiclass summary needs the predicted classes")
        out = multiclass_summary(labels, predicted, scores)
    elif task == "binary":
        out = classification_summary(labels, scores, threshold)
    else:
        raise ValueError(f"unknown task {task!r}")
    out["task"] = task
    return out


def latency_summary(latencies_ms: ArrayLike) -> dict[str, float]:
    """Mean, max and percentiles (linear interpolation) of exact client-side latencies in ms.

    Locust's own percentiles round response times below 100 ms to whole milliseconds; these are
    computed from the unrounded times, which matters for a sub-millisecond server.
    """
    lat = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if lat.size == 0:
        return {"count": 0}
    out: dict[str, float] = {
        "count": int(lat.size),
        "mean": float(lat.mean()),
        "max": float(lat.max()),
    }
    values = np.percentile(lat, LATENCY_PERCENTILES)
    for p, v in zip(LATENCY_PERCENTILES, values, strict=True):
        out[percentile_key(p)] = float(v)
    return out


def percentile_key(p: float) -> str:
    """50.0 -> 'p50', 99.9 -> 'p99.9'."""
    return f"p{p:g}"


@dataclass
class ScoreLog:
    """Append-only record of one model's answers in one process; cheap to append and to ship.

    ``keys`` identify the row sent (a hold-out row index, or a perturbed copy's own key) so that
    repeated answers for the same row can be compared; ``labels``, ``scores`` and (multiclass)
    ``predicted`` hold, per answered row, what the module's table says. The request arrays hold
    one entry per request, answered or not.
    """

    keys: array[int] = field(default_factory=lambda: array("q"))
    labels: array[float] = field(default_factory=lambda: array("d"))
    scores: array[float] = field(default_factory=lambda: array("d"))
    predicted: array[int] = field(default_factory=lambda: array("q"))
    """Multiclass only: the answer's label as a class index, one per answered row."""
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    statuses: array[int] = field(default_factory=lambda: array("h"))
    request_rows: array[int] = field(default_factory=lambda: array("l"))

    FIELDS = ("keys", "labels", "scores", "predicted", "latencies_ms", "statuses", "request_rows")

    def record_request(self, latency_ms: float, status: int, rows: int) -> None:
        self.latencies_ms.append(latency_ms)
        self.statuses.append(status)
        self.request_rows.append(rows)

    def record_rows(
        self,
        keys: list[int],
        labels: list[float],
        scores: list[float],
        predicted: list[int] | None = None,
    ) -> None:
        self.keys.extend(keys)
        self.labels.extend(labels)
        self.scores.extend(scores)
        if predicted is not None:
            self.predicted.extend(predicted)

    def clear(self) -> None:
        for name in self.FIELDS:
            del getattr(self, name)[:]

    def lengths(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.FIELDS}

    def export_since(self, offsets: dict[str, int]) -> dict[str, bytes]:
        """The entries appended since ``offsets`` (updated in place), as raw bytes per field."""
        chunk: dict[str, bytes] = {}
        for name in self.FIELDS:
            arr: array[Any] = getattr(self, name)
            start = offsets.get(name, 0)
            chunk[name] = arr[start:].tobytes()
            offsets[name] = len(arr)
        return chunk

    def extend_from(self, chunk: dict[str, bytes]) -> None:
        """Append a chunk made by :meth:`export_since` (in another process, same platform)."""
        for name in self.FIELDS:
            data = chunk.get(name, b"")
            if data:
                getattr(self, name).frombytes(data)

    def merge(self, other: ScoreLog) -> None:
        for name in self.FIELDS:
            getattr(self, name).extend(getattr(other, name))


def summarize(
    log: ScoreLog,
    threshold: float | None,
    *,
    task: str = "binary",
    duration_s: float | None = None,
) -> dict[str, Any]:
    """Turn one model's log into the run's figures (JSON-ready).

    Accuracy (the task's own metrics, :func:`task_summary`) is computed over distinct rows (the
    first answer for each key), so replaying a row twice does not weigh it twice;
    ``max_repeat_diff`` is the largest difference between a later answer for a row and its first
    one (0 for a correct server; large values point at a cache or batching bug that answered one
    row with another's result; a multiclass row whose predicted class changed counts as 1). With
    ``threshold=None`` (a total over several models) only the request figures are computed.
    """
    statuses = (
        np.frombuffer(log.statuses, dtype=np.int16) if len(log.statuses) else np.zeros(0, np.int16)
    )
    latencies = (
        np.frombuffer(log.latencies_ms, dtype=np.float64) if len(log.latencies_ms) else np.zeros(0)
    )
    request_rows = np.asarray(log.request_rows, dtype=np.int64)
    requests = int(statuses.size)
    ok_mask = (statuses >= 200) & (statuses < 300)
    ok = int(ok_mask.sum())
    status_counts = {
        str(int(code)): int(n)
        for code, n in zip(*np.unique(statuses, return_counts=True), strict=True)
    }
    out: dict[str, Any] = {
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "error_rate": (requests - ok) / requests if requests else 0.0,
        "rate_503": int(np.sum(statuses == 503)) / requests if requests else 0.0,
        "rate_504": int(np.sum(statuses == 504)) / requests if requests else 0.0,
        "status_counts": status_counts,
        "rows_sent": int(request_rows.sum()),
        "rows_answered": len(log.scores),
        "latency_ms": latency_summary(latencies),
        "latency_ok_ms": latency_summary(latencies[ok_mask]),
    }
    if duration_s:
        out["duration_s"] = duration_s
        out["throughput_rps"] = requests / duration_s
        out["rows_per_s"] = float(request_rows[ok_mask].sum()) / duration_s
    keys = np.asarray(log.keys, dtype=np.int64)
    if keys.size and threshold is not None:
        labels = np.asarray(log.labels, dtype=np.float64)
        scores = np.asarray(log.scores, dtype=np.float64)
        uniq, first = np.unique(keys, return_index=True)
        inverse = np.searchsorted(uniq, keys)
        out["distinct_rows"] = int(uniq.size)
        diff = np.nan_to_num(np.abs(scores - scores[first][inverse]), nan=0.0)
        predicted = None
        if task == "multiclass":
            pred_all = np.asarray(log.predicted, dtype=np.int64)
            if pred_all.size != keys.size:
                raise ValueError(f"{keys.size} answered rows but {pred_all.size} predicted classes")
            diff = np.maximum(diff, (pred_all != pred_all[first][inverse]).astype(np.float64))
            predicted = pred_all[first]
        out["max_repeat_diff"] = float(np.max(diff))
        out["accuracy"] = task_summary(
            task, labels[first], scores[first], threshold=threshold, predicted=predicted
        )
    else:
        out["distinct_rows"] = 0
        out["max_repeat_diff"] = 0.0
        out["accuracy"] = None
    return out
