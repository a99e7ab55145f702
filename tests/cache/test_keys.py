"""Keys: canonical rows, and everything that must separate one model's entries from another's."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from server.cache.keys import canonical_rows, model_prefix, namespace, row_keys
from server.modelcard import ModelCard
from tests.cache.conftest import make_card


def keys_of(rows: list[list[float]], prefix: bytes = b"p:") -> list[bytes]:
    return row_keys(prefix, np.array(rows, dtype=np.float32))


def test_negative_zero_and_zero_share_a_key() -> None:
    a, b = keys_of([[0.0, 1.0], [-0.0, 1.0]])
    assert a == b


def test_every_nan_is_one_canonical_nan() -> None:
    payload_nan = np.array([0x7FA00001, 0xFFC00000], dtype=np.uint32).view(np.float32)
    rows = np.array([[np.nan, 1.0], [payload_nan[0], 1.0], [payload_nan[1], 1.0]], np.float32)
    k1, k2, k3 = row_keys(b"p:", rows)
    assert k1 == k2 == k3
    assert canonical_rows(rows).view(np.uint32)[:, 0].tolist() == [0x7FC00000] * 3


def test_nan_position_matters() -> None:
    a, b = keys_of([[np.nan, 1.0], [1.0, np.nan]])
    assert a != b


def test_different_values_differ_and_the_input_is_not_modified() -> None:
    rows = np.array([[-0.0, 1.0], [1.0, 1.0000001]], dtype=np.float32)
    before = rows.copy()
    a, b = row_keys(b"p:", rows)
    assert a != b
    assert np.array_equal(rows.view(np.uint32), before.view(np.uint32))


def test_keys_are_the_prefix_plus_a_16_byte_digest() -> None:
    (key,) = keys_of([[1.0, 2.0]], prefix=b"ns:")
    assert key.startswith(b"ns:") and len(key) == 3 + 16


def test_float64_input_is_hashed_as_float32() -> None:
    as64 = row_keys(b"p:", np.array([[0.1, 2.0]], dtype=np.float64))
    as32 = row_keys(b"p:", np.array([[0.1, 2.0]], dtype=np.float32))
    assert as64 == as32


def test_non_contiguous_rows_hash_like_their_copy() -> None:
    wide = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert row_keys(b"p:", wide[:, ::2]) == row_keys(b"p:", np.ascontiguousarray(wide[:, ::2]))


def test_one_dimensional_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        row_keys(b"p:", np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(
    "other",
    [
        make_card(version=2),
        make_card(sha256="cd" * 32),
        make_card(n_features=5),
        make_card(name="churn"),
    ],
    ids=["version", "sha256", "width", "name"],
)
def test_the_namespace_separates_models_versions_files_and_widths(other: ModelCard) -> None:
    assert namespace(make_card(), 0) != namespace(other, 0)


def test_the_generation_is_part_of_the_namespace() -> None:
    card = make_card()
    assert namespace(card, 1) != namespace(card, 2)
    assert namespace(card, 1).startswith(model_prefix(card.name))
    assert not namespace(make_card(name="fraud2"), 1).startswith(model_prefix("fraud"))


def test_the_digest_is_blake2b_16_of_the_canonical_float32_bytes() -> None:
    rows = np.array([[1.5, -0.0, np.nan], [2.0, 3.0, 4.0]], dtype=np.float32)
    canonical = canonical_rows(rows)
    expected = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in canonical]
    assert row_keys(b"", rows) == expected
