"""Reading /v1 answers per task: what each answered row is scored with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests.answers import AnswerReader, UnusableAnswer
from loadtests.holdout import ReplaySet


def _replay(task: str, classes: tuple[int | str, ...], positive: int | str | None) -> ReplaySet:
    X = np.zeros((3, 2), dtype=np.float32)
    return ReplaySet(
        model="m",
        version=1,
        dataset="d",
        X=X,
        y=np.zeros(3, dtype=np.int64),
        row_json=[b"[0.0,0.0]"] * 3,
        threshold=0.5,
        positive_class=positive,
        feature_names=["a", "b"],
        offline={},
        task=task,
        classes=classes,
    )


def test_binary_keeps_the_positive_class_score() -> None:
    reader = AnswerReader(_replay("binary", ("No", "Yes"), "Yes"))
    body = (
        b'{"model":"m","version":1,"request_id":"r","classes":["No","Yes"],"predictions":'
        b'[{"label":"Yes","scores":[0.2,0.8]},{"label":"No","scores":[0.9,0.1]}]}'
    )
    scored = reader.read(body, [1.0, 0.0])
    assert scored.scores == [0.8, 0.1] and scored.predicted is None


def test_multiclass_maps_the_label_to_its_class_index() -> None:
    reader = AnswerReader(_replay("multiclass", ("damaged", "late", "wrong_size"), None))
    body = (
        b'{"classes":["damaged","late","wrong_size"],"predictions":['
        b'{"label":"late","scores":[0.1,0.7,0.2]},'
        b'{"label":"wrong_size","scores":[0.3,0.3,0.4]}]}'
    )
    scored = reader.read(body, [1.0, 0.0])  # true classes: late, damaged
    assert scored.predicted == [1, 2]
    assert scored.scores == [0.7, 0.3]  # the score each row's true class got
    # int labels are found by value (an answer's 3 is the class 3, not an index)
    ints = AnswerReader(_replay("multiclass", (3, 5, 7), None))
    scored = ints.read(b'{"classes":[3,5,7],"predictions":[{"label":7,"scores":[]}]}', [2.0])
    assert scored.predicted == [2] and math.isnan(scored.scores[0])
    with pytest.raises(UnusableAnswer, match="not one of"):
        reader.read(b'{"predictions":[{"label":"other","scores":[1,0,0]}]}', [0.0])
    with pytest.raises(UnusableAnswer, match="not the card's"):
        reader.read(b'{"classes":["a","b","c"],"predictions":[{"label":"a"}]}', [0.0])


def test_regression_keeps_the_value() -> None:
    reader = AnswerReader(_replay("regression", (), None))
    body = b'{"model":"m","version":1,"request_id":"r","predictions":[{"value":12.5},{"value":3}]}'
    assert reader.read(body, [10.0, 4.0]).scores == [12.5, 3.0]
    with pytest.raises(UnusableAnswer, match="without a value"):
        reader.read(b'{"predictions":[{"scores":[0.1]}]}', [1.0])
    with pytest.raises(UnusableAnswer, match="2 predictions for 1 rows"):
        reader.read(body, [1.0])
    with pytest.raises(UnusableAnswer, match="unusable 200 body"):
        reader.read(b"<html>", [1.0])
