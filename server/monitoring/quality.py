"""Live quality per task: the newest labelled rows, and the metrics computed from them at read time.

A :class:`LabelWindow` keeps the newest ``capacity`` labelled rows as (prediction, truth, row
seq) in a ring: what the server answered for the row (binary: the positive-class score;
multiclass: the predicted class's index; regression: the predicted value) and the label that
came later (binary: 1.0 for the positive class, else 0.0; multiclass: the class index;
regression: the target). A second label for the same served row replaces the first (a
corrected label) while the pair is still in the window. Each task reads the pairs its own way:

- :class:`BinaryQuality`: precision, recall and F1 at the decision threshold, the Brier score,
  the mean score versus the observed positive rate;
- :class:`MulticlassQuality`: accuracy, macro and weighted F1 (over the classes present among
  the labels or the predictions, as scikit-learn's default), per-class precision, recall and F1,
  the labels' and the predictions' class shares;
- :class:`RegressionQuality`: MAE, RMSE, the mean error (prediction - target: bias), the mean
  prediction and the mean target.

A ratio whose denominator is 0 (no labels yet, no predicted positives) is None.

Every metric is computed from a few *sufficient statistics* of the pairs (:meth:`LabelWindow.stats`:
counts, sums, a confusion matrix; JSON-ready), which add up across windows (:func:`add_stats`):
with ``--workers N`` the quality of all workers' labels is the summary of their stats summed
(``server.monitoring.shared``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.modelcard import Label


class LabelWindow:
    """The newest ``capacity`` labelled rows as (prediction, truth, row seq)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._predictions = np.zeros(capacity, dtype=np.float64)
        self._truths = np.zeros(capacity, dtype=np.float64)
        self._row_seq = np.full(capacity, -1, dtype=np.int64)
        self._next = 0
        self.labels_total = 0
        """Feedback calls counted since start (including replaced labels)."""

    @property
    def size(self) -> int:
        return min(self._next, self.capacity)

    def add(self, prediction: float, truth: float, row_seq: int, previous: int) -> tuple[int, bool]:
        """Record a label; replace the earlier label of the same row if it is still in the window.

        Returns the label's position (to pass back as ``previous`` next time) and whether it
        replaced an earlier label.
        """
        self.labels_total += 1
        if (
            previous >= 0
            and previous >= self._next - self.capacity
            and self._row_seq[previous % self.capacity] == row_seq
        ):
            self._truths[previous % self.capacity] = truth
            return previous, True
        ref = self._next
        slot = ref % self.capacity
        self._predictions[slot] = prediction
        self._truths[slot] = truth
        self._row_seq[slot] = row_seq
        self._next += 1
        return ref, False

    def pairs(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(predictions, truths) in the window (not in arrival order once it wrapped)."""
        n = self.size
        return self._predictions[:n], self._truths[:n]

    def stats(self) -> dict[str, Any]:
        """The window's sufficient statistics (JSON-ready; they add up, see :func:`add_stats`)."""
        return {
            "labels": self.size,
            "window": self.capacity,
            "labels_total": self.labels_total,
            **self._pair_stats(),
        }

    def summary(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The live quality of this window, or of ``stats`` (several windows' stats summed)."""
        s = self.stats() if stats is None else stats
        counts = {"labels": s["labels"], "window": s["window"], "labels_total": s["labels_total"]}
        return {**counts, **self._metrics(s)}

    def _pair_stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _metrics(self, stats: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class BinaryQuality(LabelWindow):
    """Binary: prediction = positive-class score, truth = 1.0 for the positive class."""

    def __init__(self, capacity: int, threshold: float) -> None:
        super().__init__(capacity)
        self.threshold = threshold

    def _pair_stats(self) -> dict[str, Any]:
        scores, truths = self.pairs()
        actual = truths > 0.5
        predicted = scores >= self.threshold
        return {
            "true_positives": int(np.count_nonzero(predicted & actual)),
            "false_positives": int(np.count_nonzero(predicted & ~actual)),
            "false_negatives": int(np.count_nonzero(~predicted & actual)),
            "positives": int(np.count_nonzero(actual)),
            "squared_error_sum": float(np.sum((scores - actual) ** 2)),
            "score_sum": float(np.sum(scores)),
        }

    def _metrics(self, stats: dict[str, Any]) -> dict[str, Any]:
        n = stats["labels"]
        tp, fp, fn = stats["true_positives"], stats["false_positives"], stats["false_negatives"]
        return {
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "brier": stats["squared_error_sum"] / n if n else None,
            "mean_score": stats["score_sum"] / n if n else None,
            "observed_positive_rate": stats["positives"] / n if n else None,
        }


class MulticlassQuality(LabelWindow):
    """Multiclass: prediction = predicted class index, truth = true class index."""

    def __init__(self, capacity: int, classes: Sequence[Label]) -> None:
        super().__init__(capacity)
        self.classes = list(classes)

    def _pair_stats(self) -> dict[str, Any]:
        predicted_f, truths_f = self.pairs()
        k = len(self.classes)
        predicted = predicted_f.astype(np.int64)
        truths = truths_f.astype(np.int64)
        confusion = np.bincount(truths * k + predicted, minlength=k * k).reshape(k, k)
        return {"confusion": confusion.tolist()}

    def _metrics(self, stats: dict[str, Any]) -> dict[str, Any]:
        k = len(self.classes)
        confusion = np.array(stats["confusion"], dtype=np.int64).reshape(k, k)
        n = int(confusion.sum())
        tp = np.diag(confusion)
        support = confusion.sum(axis=1)  # labels per class
        predicted_count = confusion.sum(axis=0)
        present = (support + predicted_count) > 0
        f1 = np.divide(
            2 * tp, support + predicted_count, out=np.zeros(k), where=present
        )  # 2tp / (2tp + fp + fn)
        per_class = [
            {
                "class": label,
                "support": int(support[i]),
                "predicted": int(predicted_count[i]),
                "precision": _ratio(int(tp[i]), int(predicted_count[i])),
                "recall": _ratio(int(tp[i]), int(support[i])),
                "f1": float(f1[i]) if present[i] else None,
            }
            for i, label in enumerate(self.classes)
        ]
        return {
            "accuracy": _ratio(int(tp.sum()), n),
            "macro_f1": float(f1[present].mean()) if n else None,
            "weighted_f1": float(np.sum(f1 * support) / n) if n else None,
            "observed_class_shares": [float(s) / n for s in support] if n else None,
            "predicted_class_shares": [float(s) / n for s in predicted_count] if n else None,
            "per_class": per_class,
        }


class RegressionQuality(LabelWindow):
    """Regression: prediction = predicted value, truth = target."""

    def _pair_stats(self) -> dict[str, Any]:
        predicted, targets = self.pairs()
        errors = predicted - targets
        return {
            "abs_error_sum": float(np.sum(np.abs(errors))),
            "squared_error_sum": float(np.sum(errors * errors)),
            "error_sum": float(np.sum(errors)),
            "prediction_sum": float(np.sum(predicted)),
            "target_sum": float(np.sum(targets)),
        }

    def _metrics(self, stats: dict[str, Any]) -> dict[str, Any]:
        n = stats["labels"]
        if not n:
            return dict.fromkeys(("mae", "rmse", "mean_error", "mean_prediction", "mean_target"))
        mean_square = stats["squared_error_sum"] / n
        return {
            "mae": _finite(stats["abs_error_sum"] / n),
            "rmse": _finite(math.sqrt(mean_square)) if mean_square >= 0 else None,
            "mean_error": _finite(stats["error_sum"] / n),
            "mean_prediction": _finite(stats["prediction_sum"] / n),
            "mean_target": _finite(stats["target_sum"] / n),
        }


def add_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two windows' :meth:`LabelWindow.stats` added up (numbers summed, matrices elementwise)."""
    if a.keys() != b.keys():
        raise ValueError(f"stats of different kinds: {sorted(a)} and {sorted(b)}")
    summed: dict[str, Any] = {}
    for key, value in a.items():
        other = b[key]
        if isinstance(value, list):
            summed[key] = (np.array(value) + np.array(other)).tolist()
        else:
            summed[key] = value + other
    return summed


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _finite(value: float | np.floating[Any]) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None
