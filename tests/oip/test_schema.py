"""A model's tensors as the protocol states them (``server.oip.schema``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from server.errors import InvalidInput
from server.modelcard import ModelCard, load_card
from server.oip.schema import check_values, labels, model_inputs, model_outputs
from server.payload import labels_for


@pytest.fixture(scope="module")
def card(model_repo: Path) -> ModelCard:
    return load_card(model_repo / "logreg" / "1")


def test_metadata_states_the_models_tensors(card: ModelCard) -> None:
    assert [tuple(t) for t in model_inputs(card)] == [("input", "FP32", [-1, 24])]
    assert [tuple(t) for t in model_outputs(card)] == [
        ("probabilities", "FP32", [-1, 2]),
        ("label", "INT64", [-1]),
    ]


def test_labels_are_v1s_binary_and_multiclass(card: ModelCard) -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((200, 2), dtype=np.float32)
    scores[:5, card.positive_index] = np.float32(card.threshold)  # exactly at the threshold
    assert labels(card, scores) == labels_for(scores.tolist(), card)
    three = msgspec.structs.replace(card, classes=[3, 7, 9], positive_class=7)
    scores3 = rng.random((200, 3), dtype=np.float32)
    scores3[:5] = 0.5  # ties: the first class
    assert labels(three, scores3) == labels_for(scores3.tolist(), three)


def test_values_finite_or_missing_where_allowed(card: ModelCard) -> None:
    big = np.full((3, 24), 3e38, dtype=np.float32)  # finite; their float32 sum would overflow
    assert check_values(big, card) is big
    bad = big.copy()
    bad[2, 5] = np.nan
    with pytest.raises(InvalidInput, match=r"row 2 feature .* is missing"):
        check_values(bad, card)
    trees = msgspec.structs.replace(
        card,
        input=msgspec.structs.replace(
            card.input,
            columns=[msgspec.structs.replace(c, allow_missing=True) for c in card.input.columns],
        ),
    )
    assert check_values(bad, trees) is bad
    bad[0, 1] = -np.inf
    with pytest.raises(InvalidInput, match=r"row 0 feature .* is infinite"):
        check_values(bad, trees)


def test_committed_grpc_modules_are_regenerated_from_the_proto(tmp_path: Path) -> None:
    """Edit server/oip/grpc_predict_v2.proto, then run ``python -m server.oip.regenerate``."""
    from server.oip.regenerate import HERE, regenerate

    for path in regenerate(tmp_path):
        assert path.read_bytes() == (HERE / path.name).read_bytes(), path.name
