"""Decoding and labelling, directly: the fast paths agree with the plain numpy reading."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from server.modelcard import ModelCard, load_card
from server.payload import decode_predict, encode_predict, labels_for


@pytest.fixture
def card(model_repo: Path) -> ModelCard:
    return load_card(model_repo / "xgb_small" / "1")


@pytest.mark.parametrize("n", [1, 3])
def test_list_rows_decode_to_the_float32_values(
    card: ModelCard, holdout: np.ndarray, n: int
) -> None:
    rows = holdout[:n].astype(np.float32)
    got = decode_predict(msgspec.json.encode({"instances": rows.tolist()}), card, 100)
    assert got.dtype == np.float32 and got.shape == (n, card.input.n_features)
    np.testing.assert_array_equal(got, rows)


def test_binary_label_is_positive_from_the_threshold_up(card: ModelCard) -> None:
    pos, t = card.positive_index, card.threshold
    neg_class = card.classes[1 - pos]
    at, below = [0.0, 0.0], [0.0, 0.0]
    at[pos], at[1 - pos] = t, 1 - t
    below[pos], below[1 - pos] = np.nextafter(t, -1.0), 1 - t
    assert labels_for([at, below], card) == [card.positive_class, neg_class]


def test_multiclass_label_is_the_first_argmax(card: ModelCard) -> None:
    three = msgspec.structs.replace(card, classes=[3, 5, 7], positive_class=3)
    rows = [[0.2, 0.5, 0.3], [0.4, 0.2, 0.4], [0.1, 0.1, 0.8]]
    assert labels_for(rows, three) == [5, 3, 7]
    assert labels_for(rows, three) == [three.classes[i] for i in np.argmax(rows, axis=1)]


def test_encoded_prediction_carries_labels_and_scores(card: ModelCard) -> None:
    scores = np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    body = msgspec.json.decode(encode_predict(card, "rid-1", scores))
    assert body["request_id"] == "rid-1" and body["classes"] == card.classes
    assert [p["label"] for p in body["predictions"]] == labels_for(scores.tolist(), card)
    assert [p["scores"] for p in body["predictions"]] == scores.tolist()
