"""Scoring what the server returned: classification metrics and latency, in numpy only.

The locustfile appends one entry per answered row (a key, the true label, the returned
positive-class score) and one entry per request (latency, status, rows) to a :class:`ScoreLog`;
nothing is computed on the request path. At the end of a run :func:`summarize` turns the log into
the figures the report shows: precision, recall and F1 at the model card's threshold, PR-AUC
(average precision, the same definition as ``sklearn.metrics.average_precision_score``), ROC-AUC,
the error and 503 rates, and exact latency percentiles.

This module imports neither Locust nor gevent, so the tests exercise it in-process.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

LATENCY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)


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
    repeated answers for the same row can be compared; ``labels`` and ``scores`` are the true
    label and the returned positive-class probability of each answered row. The request arrays
    hold one entry per request, answered or not.
    """

    keys: array[int] = field(default_factory=lambda: array("q"))
    labels: array[int] = field(default_factory=lambda: array("b"))
    scores: array[float] = field(default_factory=lambda: array("d"))
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    statuses: array[int] = field(default_factory=lambda: array("h"))
    request_rows: array[int] = field(default_factory=lambda: array("l"))

    FIELDS = ("keys", "labels", "scores", "latencies_ms", "statuses", "request_rows")

    def record_request(self, latency_ms: float, status: int, rows: int) -> None:
        self.latencies_ms.append(latency_ms)
        self.statuses.append(status)
        self.request_rows.append(rows)

    def record_rows(self, keys: list[int], labels: list[int], scores: list[float]) -> None:
        self.keys.extend(keys)
        self.labels.extend(labels)
        self.scores.extend(scores)

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
    log: ScoreLog, threshold: float | None, *, duration_s: float | None = None
) -> dict[str, Any]:
    """Turn one model's log into the run's figures (JSON-ready).

    Accuracy is computed over distinct rows (the first answer for each key), so replaying a row
    twice does not weigh it twice; ``max_repeat_diff`` is the largest difference between a later
    answer for a row and its first one (0 for a correct server; large values point at a cache or
    batching bug that answered one row with another's result). With ``threshold=None`` (a
    total over several models) only the request figures are computed.
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
        labels = np.asarray(log.labels, dtype=np.int64)
        scores = np.asarray(log.scores, dtype=np.float64)
        uniq, first = np.unique(keys, return_index=True)
        inverse = np.searchsorted(uniq, keys)
        out["distinct_rows"] = int(uniq.size)
        out["max_repeat_diff"] = float(np.max(np.abs(scores - scores[first][inverse])))
        out["accuracy"] = classification_summary(labels[first], scores[first], threshold)
    else:
        out["distinct_rows"] = 0
        out["max_repeat_diff"] = 0.0
        out["accuracy"] = None
    return out
