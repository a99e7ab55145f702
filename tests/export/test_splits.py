"""Leakage guard: train, validation and test rows are disjoint, complete and stratified."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import make_fraud
from export.splits import holdout_halves, stratified_split


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_is_disjoint_complete_and_stratified(seed: int) -> None:
    _, y, _ = make_fraud(10_000, seed=seed)
    split = stratified_split(y, seed)
    parts = [split.train, split.validation, split.test]
    assert sum(len(p) for p in parts) == len(y)
    assert not set(split.train) & set(split.validation)
    assert not set(split.train) & set(split.test)
    assert not set(split.validation) & set(split.test)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    assert len(split.test) == pytest.approx(0.2 * len(y), abs=2)
    assert len(split.validation) == pytest.approx(0.2 * len(y), abs=2)
    for part in parts:
        assert y[part].mean() == pytest.approx(y.mean(), abs=0.002)


def test_split_is_deterministic() -> None:
    _, y, _ = make_fraud(3_000, seed=0)
    a, b = stratified_split(y, 5), stratified_split(y, 5)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)


def test_holdout_halves_are_disjoint_and_stratified() -> None:
    y = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    val, test = holdout_halves(y, seed=0)
    assert not set(val) & set(test) and len(val) + len(test) == 100
    assert y[val].sum() == 5 and y[test].sum() == 5


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(np.zeros(10, dtype=np.int64), 0, validation=0.6, test=0.5)


def test_a_regression_target_splits_unstratified() -> None:
    y = np.linspace(0.0, 1.0, 101)
    val, test = holdout_halves(y, seed=0, stratify=False)
    assert not set(val) & set(test) and len(val) + len(test) == 101
    split = stratified_split(y, 0, stratify=False)
    assert len(split.train) + len(split.validation) + len(split.test) == 101
