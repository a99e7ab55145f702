"""Hold-out rows of typed models go out as a client would send them, and decode back exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from loadtests.holdout import UNSEEN_SENT, RowEncoder, load_replay, shifted_rows
from loadtests.traffic import SequentialPicker, UniquePicker
from server.columns import UNSEEN, Codec
from server.modelcard import Column, DatasetInfo, InputSpec, encode_card, placeholder_card


def _instances(body: bytes) -> list[object]:
    instances: list[object] = json.loads(body)["instances"]
    return instances


def _back_to_matrix(codec: Codec, rows: list[dict[str, object]]) -> np.ndarray:
    """What the server's row matrix holds for these rows (the shared Codec's mapping)."""
    names = codec.spec.feature_names
    return np.column_stack(
        [codec.encode_column(j, [row[name] for row in rows]) for j, name in enumerate(names)]
    )


def test_typed_rows_are_objects_of_raw_values(typed_repo: Path) -> None:
    replay = load_replay(typed_repo, "shop_multiclass")
    assert replay.task == "multiclass" and replay.classes == ("damaged", "late", "wrong_size")
    rows = _instances(replay.body(range(20)))
    assert all(isinstance(r, dict) for r in rows)
    first = rows[0]
    assert isinstance(first, dict)
    assert list(first) == replay.feature_names  # every column, in the card's order
    assert isinstance(first["category"], str) and isinstance(first["x00"], float)
    card_spec = replay.encoder.spec if replay.encoder is not None else None
    assert card_spec is not None
    # The strings map back, through the server's own Codec, to the very hold-out row matrix.
    matrix = _back_to_matrix(Codec(card_spec), rows)  # type: ignore[arg-type]
    assert np.array_equal(matrix, replay.X[:20])
    # What each row is scored against: the class index, as the hold-out holds it.
    request = SequentialPicker(replay).take(5)
    assert request.labels == [float(v) for v in replay.y[:5]]


def test_regression_rows_are_scored_against_the_target(typed_repo: Path) -> None:
    replay = load_replay(typed_repo, "shop_regression")
    assert replay.task == "regression" and replay.classes == ()
    assert replay.y.dtype == np.float64
    request = SequentialPicker(replay).take(3)
    assert request.labels == pytest.approx(replay.y[:3].tolist())
    assert replay.offline["task"] == "regression" and replay.offline["mae"] > 0


def test_numeric_models_keep_the_list_form(typed_repo: Path) -> None:
    replay = load_replay(typed_repo, "shop_binary_codes")
    assert replay.encoder is None
    rows = _instances(replay.body([0, 1]))
    assert np.array_equal(np.asarray(rows, dtype=np.float64).astype(np.float32), replay.X[:2])


def test_unique_rows_of_a_typed_model_perturb_a_number_only(typed_repo: Path) -> None:
    replay = load_replay(typed_repo, "shop_regression")
    assert replay.encoder is not None
    codec = Codec(replay.encoder.spec)
    picker = UniquePicker(replay)
    n = replay.n_rows
    picker.take(n)  # the first pass: the hold-out rows as they are
    request = picker.take(10)
    rows = _instances(request.body)
    matrix = _back_to_matrix(codec, rows)  # type: ignore[arg-type]
    original = replay.X[[k % n for k in request.keys]]
    changed = np.flatnonzero((matrix != original).any(axis=0))
    assert changed.size == 1 and replay.encoder.spec.columns[changed[0]].kind == "numeric"
    assert np.allclose(matrix, original, rtol=1e-5, atol=1e-5)
    assert request.labels == pytest.approx([replay.y[k % n] for k in request.keys])


def test_missing_unseen_and_boolean_values_are_sent_as_a_client_would() -> None:
    spec = InputSpec(
        columns=[
            Column(name="amount", allow_missing=True),
            Column(name="member", kind="boolean", allow_missing=True),
            Column(name="region", kind="categorical", categories=["north", "south"]),
            Column(name="store", kind="categorical", categories=[10, 20], unknown="serve"),
        ]
    )
    X = np.array(
        [[1.5, 1.0, 0.0, 1.0], [math.nan, math.nan, 1.0, UNSEEN], [2.0, 0.0, 1.0, 0.0]],
        dtype=np.float32,
    )
    encoder = RowEncoder(spec)
    rows = [json.loads(b) for b in encoder.encode(X)]
    assert rows[0] == {"amount": 1.5, "member": True, "region": "north", "store": 20}
    assert rows[1] == {"amount": None, "member": None, "region": "south", "store": 9}
    assert rows[2]["member"] is False
    # A string column's unseen value goes out as a plain unknown string, never the server's NUL
    # stand-in; as a list in column order, the same values.
    text = RowEncoder(
        InputSpec(columns=[Column(name="c", kind="categorical", categories=["a"], unknown="serve")])
    )
    assert json.loads(text.encode(np.array([[UNSEEN]], dtype=np.float32))[0]) == {"c": UNSEEN_SENT}
    as_lists = [json.loads(b) for b in encoder.encode(X, objects=False)]
    assert as_lists[0] == [1.5, True, "north", 20]


def test_shifted_rows_come_from_the_model_data_sets_generator(tmp_path: Path) -> None:
    from export.data import pricing_dataset

    reference = pricing_dataset(200, seed=3)
    card = msgspec.structs.replace(
        placeholder_card("pricing_model", columns=reference.input_columns, task="regression"),
        dataset=DatasetInfo(name="pricing", rows_train=1, rows_validation=1, rows_test=50),
    )
    version_dir = tmp_path / "pricing_model" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.json").write_bytes(encode_card(card))
    (version_dir / "model.onnx").write_bytes(b"not read here")
    np.savez(version_dir / "holdout.npz", X=reference.X[:50], y=reference.y[:50])

    shifted = load_replay(tmp_path, "pricing_model", shift=1.0, seed=4)
    expected = pricing_dataset(50, 4, 1.0)
    assert shifted.dataset == "pricing shift=1" and np.array_equal(shifted.X, expected.X)
    assert shifted.labels == pytest.approx(expected.y.tolist())
    first = _instances(shifted.body([0]))[0]
    assert isinstance(first, dict) and any(isinstance(v, str) for v in first.values())
    with pytest.raises(ValueError, match="no data generator for the 'elsewhere' data set"):
        shifted_rows("elsewhere", 10, 0, 1.0)
