"""Reading a ``/v1`` predict answer into what the score log records, per task.

The answer's shape follows the model's task: binary ``{"classes": [...], "predictions": [{"label",
"scores"}]}`` (the positive class's score is kept), multiclass the same with one score per class
and the argmax ``label`` (the label is mapped back to its class index; the score the row's true
class got is kept for log-loss), regression ``{"predictions": [{"value"}]}``. This module imports
neither Locust nor gevent, so the tests exercise it in-process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from loadtests.holdout import ReplaySet
from server.modelcard import Label


class _Prediction(msgspec.Struct):
    label: int | str | None = None
    scores: list[float] = []
    value: float | None = None


class _PredictResponse(msgspec.Struct):
    predictions: list[_Prediction]
    classes: list[int | str] = []


_decoder = msgspec.json.Decoder(_PredictResponse)


class UnusableAnswer(ValueError):
    """A 200 answer that cannot be scored (wrong shape, a label not among the classes...)."""


@dataclass(frozen=True)
class Scored:
    scores: list[float]
    """Per row: positive-class score (binary), the true class's score (multiclass), the value
    (regression)."""
    predicted: list[int] | None
    """Multiclass: the answer's label as a class index; None for the other tasks."""


def _index(classes: list[int | str] | tuple[Label, ...]) -> dict[object, int]:
    """Label -> class index, finding an int label by its string too (and the reverse)."""
    out: dict[object, int] = {}
    for i, c in enumerate(classes):
        out.setdefault(c, i)
        out.setdefault(str(c), i)
    return out


class AnswerReader:
    """Reads one model's answers; built once per replay set."""

    def __init__(self, replay: ReplaySet) -> None:
        self.task = replay.task
        self.classes = list(replay.classes)
        self._index = _index(replay.classes)
        self._positive = (
            self._index.get(replay.positive_class, len(self.classes) - 1)
            if replay.positive_class is not None
            else len(self.classes) - 1
        )

    def read(self, body: bytes, labels: list[float]) -> Scored:
        """The scored rows of an answer to a request whose rows have true ``labels``."""
        try:
            decoded = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UnusableAnswer(f"unusable 200 body: {exc}") from None
        predictions = decoded.predictions
        if len(predictions) != len(labels):
            raise UnusableAnswer(f"{len(predictions)} predictions for {len(labels)} rows")
        if self.task == "regression":
            values = [p.value for p in predictions]
            if any(v is None for v in values):
                raise UnusableAnswer("a regression answer without a value")
            return Scored([float(v) for v in values if v is not None], None)
        if decoded.classes and [str(c) for c in decoded.classes] != [str(c) for c in self.classes]:
            raise UnusableAnswer(f"answer classes {decoded.classes} are not the card's")
        if self.task == "binary":
            try:
                return Scored([p.scores[self._positive] for p in predictions], None)
            except IndexError:
                raise UnusableAnswer("fewer scores than classes") from None
        predicted: list[int] = []
        scores: list[float] = []
        for p, label in zip(predictions, labels, strict=True):
            found = self._index.get(p.label)
            if found is None:
                raise UnusableAnswer(f"label {p.label!r} is not one of {self.classes}")
            predicted.append(found)
            true_index = int(label)
            scores.append(p.scores[true_index] if true_index < len(p.scores) else math.nan)
        return Scored(scores, predicted)
