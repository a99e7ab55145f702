"""The shadow against the primary on the same labelled rows, and the automatic promotion rule.

Every label that finds its row in both the primary's and the shadow's feedback memory becomes a
pair: what each answered for that row and the truth. Both are scored on exactly those rows with
the task's metric, so a difference is the models', not the traffic's:

- binary: PR-AUC (average precision of the positive-class scores; the metric that matters on
  imbalanced data, threshold-free);
- multiclass: macro-F1 of the predicted classes;
- regression: MAE of the predicted values (lower is better).

:meth:`Pairs.decide` promotes only with at least ``min_labels`` pairs (and, binary, both classes
among them) and a shadow better by ``margin``: PR-AUC or macro-F1 points, or an MAE lower by
that share of the primary's. A shadow that is worse, equal, or better by less never qualifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.modelcard import Task

METRIC = {"binary": "pr_auc", "multiclass": "macro_f1", "regression": "mae"}


def average_precision(y: NDArray[Any], score: NDArray[Any]) -> float | None:
    """Average precision (scikit-learn's definition: precision at each distinct threshold
    weighted by the recall it adds); None without a positive."""
    y = np.asarray(y, dtype=np.float64)
    positives = y.sum()
    if positives == 0:
        return None
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    s = np.asarray(score, dtype=np.float64)[order]
    tp = np.cumsum(y[order])
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = tp[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / positives
    return float(np.sum(precision * recall_gain))


def macro_f1(y: NDArray[Any], predicted: NDArray[Any]) -> float | None:
    """Mean F1 over the classes seen among labels or predictions; None without rows."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(predicted, dtype=np.int64)
    if y.size == 0:
        return None
    scores = []
    for c in np.union1d(y, p):
        tp = np.sum((y == c) & (p == c))
        denominator = np.sum(y == c) + np.sum(p == c)
        scores.append(2.0 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def task_metric(task: Task, y: NDArray[Any], answer: NDArray[Any]) -> float | None:
    if task == "binary":
        return average_precision(y, answer)
    if task == "multiclass":
        return macro_f1(y, answer)
    if y.size == 0:
        return None
    return float(np.mean(np.abs(np.asarray(answer, np.float64) - np.asarray(y, np.float64))))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


class Pairs:
    """The newest ``capacity`` labelled rows both models answered (a ring; a relabelled row is
    a new pair, as the quality windows count it)."""

    def __init__(self, task: Task, capacity: int) -> None:
        self.task = task
        self.capacity = max(1, capacity)
        self._primary = np.zeros(self.capacity, dtype=np.float64)
        self._shadow = np.zeros(self.capacity, dtype=np.float64)
        self._truth = np.zeros(self.capacity, dtype=np.float64)
        self.total = 0

    def add(self, primary: float, shadow: float, truth: float) -> None:
        slot = self.total % self.capacity
        self._primary[slot] = primary
        self._shadow[slot] = shadow
        self._truth[slot] = truth
        self.total += 1

    @property
    def size(self) -> int:
        return min(self.total, self.capacity)

    def metrics(self) -> tuple[float | None, float | None]:
        """(primary, shadow) task metric on the pairs held."""
        n = self.size
        y = self._truth[:n]
        return (
            task_metric(self.task, y, self._primary[:n]),
            task_metric(self.task, y, self._shadow[:n]),
        )

    def describe(self) -> dict[str, Any]:
        primary, shadow = self.metrics()
        out: dict[str, Any] = {
            "metric": METRIC[self.task],
            "labels": self.size,
            "labels_total": self.total,
            "primary": _round(primary),
            "shadow": _round(shadow),
        }
        if self.task == "binary":
            out["positives"] = int(self._truth[: self.size].sum())
        return out

    def decide(self, min_labels: int, margin: float) -> Decision:
        """Whether the shadow has earned promotion on these pairs (see the module docstring)."""
        margin = max(0.0, margin)
        n = self.size
        metric = METRIC[self.task]
        if min_labels <= 0:
            return Decision(False, "automatic promotion is off")
        if n < min_labels:
            return Decision(False, f"{n} of {min_labels} labelled rows")
        if self.task == "binary" and not 0 < self._truth[:n].sum() < n:
            return Decision(False, f"the {n} labelled rows hold one class only")
        primary, shadow = self.metrics()
        if primary is None or shadow is None:
            return Decision(False, f"{metric} undefined on the labelled rows")
        on = f"{metric} {shadow:.4f} (shadow) vs {primary:.4f} (primary) on {n} labelled rows"
        if self.task == "regression":
            better = shadow <= primary * (1.0 - margin) and shadow < primary
            rule = f"needs an MAE {margin:.0%} lower"
        else:
            better = shadow - primary >= margin and shadow > primary
            rule = f"needs +{margin:g}"
        return Decision(better, f"{on}; {rule}")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)
