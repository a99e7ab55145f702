"""What the monitor does differently per task: the answer it watches, the labels it takes, and the
snapshot sections about them.

Each served row's answer is boiled down to one number, the *answer*:

- binary: the positive class's score; the window bins it twice, on the training score edges
  (score drift) and against the decision threshold alone (predicted positive rate);
- multiclass: the predicted class's index (argmax of the scores), binned one bin a class: the
  predicted-class shares, compared with the training predictions' shares by PSI;
- regression: the predicted value, binned on the quantile edges of the training predictions
  (each reference bin about a tenth of them): PSI and the binned KS distance.

The answer is also what the feedback memory keeps for each row, so a label that arrives later
is scored against it: binary labels give precision/recall/F1/Brier at the threshold; multiclass
labels (the user's class values, ints or strings) accuracy and macro/weighted F1; regression
labels (numbers) MAE and RMSE. Each is shown beside the card's hold-out metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.errors import InvalidInput
from server.modelcard import (
    BinaryMetrics,
    ModelCard,
    MulticlassMetrics,
    RegressionMetrics,
)
from server.monitoring.quality import (
    BinaryQuality,
    LabelWindow,
    MulticlassQuality,
    RegressionQuality,
)
from server.monitoring.stats import ks_binned, ks_pvalue
from server.monitoring.window import Counts


class TaskMonitor:
    """The task-specific part of one model version's monitor."""

    answer: str
    """What the window's answer column holds (named in the snapshot)."""
    quality: LabelWindow

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        ref = card.reference
        self.edges: list[list[float]] = [list(ref.scores.bin_edges)]
        """Edges of the window columns after the features (each holds the answer)."""
        self.ref_counts = np.array([*ref.scores.counts, 0], dtype=np.int64)
        """Reference counts of the first answer column (its bins, then an empty missing slot)."""
        self._classes: dict[object, int] = {c: i for i, c in enumerate(card.classes)}
        """Class label -> index (an int class is found by its float too: 2.0 == 2)."""

    def answers(self, scores: NDArray[Any]) -> NDArray[Any]:
        """One number per row of a float [n, n_outputs] score matrix."""
        raise NotImplementedError

    def truth(self, label: object) -> float:
        """A label as the quality window keeps it; InvalidInput naming it when it is not one."""
        raise NotImplementedError

    def feedback(self, answer: float, truth: float) -> dict[str, Any]:
        """What a feedback answer says about the matched row: ``label``, ``predicted``,
        ``score`` and ``predicted_positive`` (the last two binary only, else None)."""
        raise NotImplementedError

    def scores_section(self, window: Counts, column: int, psi: float) -> dict[str, Any]:
        """The snapshot's ``scores`` section (``psi`` and ``status`` are added by the monitor)."""
        raise NotImplementedError

    def quality_section(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """The snapshot's ``quality`` section: of this monitor's labels, or of ``stats`` (the
        quality windows' stats of several workers summed)."""
        raise NotImplementedError

    def _class_index(self, label: object) -> int:
        """Index of a class label as the user gave it (an int class also as a whole float)."""
        classes = self.card.classes
        index = None
        if isinstance(label, (int, float, str)) and not isinstance(label, bool):
            index = self._classes.get(label)
        if index is None:
            raise InvalidInput(f"label {label!r} is not one of the classes {classes}")
        return index


class BinaryMonitor(TaskMonitor):
    answer = "positive_score"

    def __init__(self, card: ModelCard, capacity: int) -> None:
        super().__init__(card)
        self.threshold = card.threshold
        self.positive_index = card.positive_index
        self.edges.append([self.threshold])  # bin 1: predicted positive
        self.quality = BinaryQuality(capacity, self.threshold)

    def answers(self, scores: NDArray[Any]) -> NDArray[Any]:
        return scores[:, self.positive_index]

    def truth(self, label: object) -> float:
        return 1.0 if self._class_index(label) == self.positive_index else 0.0

    def feedback(self, answer: float, truth: float) -> dict[str, Any]:
        positive = answer >= self.threshold
        classes = self.card.classes
        other = classes[1 - self.positive_index]
        return {
            "label": classes[self.positive_index] if truth else other,
            "predicted": classes[self.positive_index] if positive else other,
            "score": answer,
            "predicted_positive": positive,
        }

    def scores_section(self, window: Counts, column: int, psi: float) -> dict[str, Any]:
        threshold_counts = window.column_counts(column + 1)
        scored = int(threshold_counts[:2].sum())
        reference = self.card.reference
        live = window.column_counts(column)
        return {
            "ks": _num(ks_binned(self.ref_counts[:-1], live[:-1])),
            "positive_rate": _num(threshold_counts[1] / scored) if scored else None,
            "reference_positive_rate": reference.predicted_positive_rate,
            "base_rate": reference.base_rate,
        }

    def quality_section(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        metrics = self.card.metrics
        assert isinstance(metrics, BinaryMetrics)
        return {
            **self.quality.summary(stats),
            "threshold": self.threshold,
            "reference": {
                "precision": metrics.precision,
                "recall": metrics.recall,
                "f1": metrics.f1,
                "brier": metrics.brier,
            },
        }


class MulticlassMonitor(TaskMonitor):
    answer = "predicted_class"

    def __init__(self, card: ModelCard, capacity: int) -> None:
        super().__init__(card)
        self.quality = MulticlassQuality(capacity, card.classes)

    def answers(self, scores: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(scores.argmax(axis=1), dtype=np.float32)

    def truth(self, label: object) -> float:
        return float(self._class_index(label))

    def feedback(self, answer: float, truth: float) -> dict[str, Any]:
        classes = self.card.classes
        return {
            "label": classes[int(truth)],
            "predicted": classes[int(answer)],
            "score": None,
            "predicted_positive": None,
        }

    def scores_section(self, window: Counts, column: int, psi: float) -> dict[str, Any]:
        live = window.column_counts(column)[:-1]
        ref = self.ref_counts[:-1]
        n_live, n_ref = int(live.sum()), int(ref.sum())
        return {
            "classes": self.card.classes,
            "predicted_shares": [float(c) / n_live for c in live] if n_live else None,
            "reference_predicted_shares": [float(c) / n_ref for c in ref] if n_ref else None,
            "class_shares": self.card.reference.class_shares,
        }

    def quality_section(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        metrics = self.card.metrics
        assert isinstance(metrics, MulticlassMetrics)
        return {
            **self.quality.summary(stats),
            "reference": {
                "accuracy": metrics.accuracy,
                "macro_f1": metrics.macro_f1,
                "weighted_f1": metrics.weighted_f1,
            },
        }


class RegressionMonitor(TaskMonitor):
    answer = "predicted_value"

    def __init__(self, card: ModelCard, capacity: int) -> None:
        super().__init__(card)
        self.quality = RegressionQuality(capacity)

    def answers(self, scores: NDArray[Any]) -> NDArray[Any]:
        return scores[:, 0]

    def truth(self, label: object) -> float:
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise InvalidInput(
                f"label {label!r} is not a number; a regressor's label is its target"
            )
        value = float(label)
        if not math.isfinite(value):
            raise InvalidInput(f"label {label!r} is not a finite number")
        return value

    def feedback(self, answer: float, truth: float) -> dict[str, Any]:
        return {"label": truth, "predicted": answer, "score": None, "predicted_positive": None}

    def scores_section(self, window: Counts, column: int, psi: float) -> dict[str, Any]:
        live = window.column_counts(column)[:-1]
        ref = self.ref_counts[:-1]
        distance = ks_binned(ref, live)
        return {
            "ks": _num(distance),
            "ks_pvalue": _num(ks_pvalue(distance, int(ref.sum()), int(live.sum()))),
            "bin_edges": list(self.card.reference.scores.bin_edges),
            "target_mean": self.card.reference.target_mean,
        }

    def quality_section(self, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        metrics = self.card.metrics
        assert isinstance(metrics, RegressionMetrics)
        return {
            **self.quality.summary(stats),
            "reference": {"mae": metrics.mae, "rmse": metrics.rmse},
        }


def task_monitor(card: ModelCard, quality_capacity: int) -> TaskMonitor:
    """The task-specific part of a monitor for ``card``."""
    if card.task == "binary":
        return BinaryMonitor(card, quality_capacity)
    if card.task == "multiclass":
        return MulticlassMonitor(card, quality_capacity)
    return RegressionMonitor(card, quality_capacity)


def _num(value: float | np.floating[Any]) -> float | None:
    """A finite float for JSON, or None."""
    v = float(value)
    return v if math.isfinite(v) else None
