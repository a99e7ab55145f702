"""Row pickers: what each scenario sends, and that bodies carry the exact float32 rows."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from loadtests.holdout import ReplaySet
from loadtests.traffic import (
    BatchSizes,
    SequentialPicker,
    UniquePicker,
    ZipfPicker,
    parse_batch_size,
)


def _rows(body: bytes) -> np.ndarray:
    return np.asarray(json.loads(body)["instances"], dtype=np.float64).astype(np.float32)


def test_sequential_covers_every_row_before_repeating(replay: ReplaySet) -> None:
    picker = SequentialPicker(replay)
    first = picker.take(30)
    second = picker.take(30)
    keys = first.keys + second.keys
    assert keys[:50] == list(range(50)) and keys[50:] == list(range(10))
    assert first.labels == replay.y[:30].tolist()
    # JSON floats parse back to the very same float32 values (cache keys depend on it).
    assert np.array_equal(_rows(first.body), replay.X[:30])


def test_zipf_prefers_a_few_hot_rows(replay: ReplaySet) -> None:
    picker = ZipfPicker(replay, s=1.5, seed=1)
    counts = Counter(k for _ in range(2000) for k in picker.take(1).keys)
    top = counts.most_common(5)
    assert sum(n for _, n in top) > 0.5 * 2000
    request = picker.take(3)
    assert request.labels == [int(replay.y[k]) for k in request.keys]
    assert np.array_equal(_rows(request.body), replay.X[request.keys])
    with pytest.raises(ValueError):
        ZipfPicker(replay, s=0)


def test_unique_never_repeats_a_row(replay: ReplaySet) -> None:
    picker = UniquePicker(replay)
    seen: set[bytes] = set()
    keys: list[int] = []
    for _ in range(120):  # more than two passes over 50 rows
        request = picker.take(1)
        row = _rows(request.body)[0]
        assert row.tobytes() not in seen
        seen.add(row.tobytes())
        keys += request.keys
        assert request.labels == [int(replay.y[request.keys[0] % 50])]
        # a perturbed copy stays within a relative 1e-5 of the original
        assert np.allclose(row, replay.X[request.keys[0] % 50], rtol=1e-5, atol=1e-5)
    assert len(set(keys)) == 120


def test_batch_sizes() -> None:
    assert parse_batch_size("64") == (64, 64)
    assert parse_batch_size("32-256") == (32, 256)
    for bad in ("0", "9-3", "x", "1-"):
        with pytest.raises(ValueError):
            parse_batch_size(bad)
    sizes = BatchSizes("32-256", seed=1)
    drawn = [sizes.next() for _ in range(500)]
    assert min(drawn) >= 32 and max(drawn) <= 256 and len(set(drawn)) > 50
