"""Stratified, disjoint train / validation / test splits.

Test rows are never used for fitting, threshold choice or early stopping: the pipeline only
touches them to compute the published metrics, the parity check and the hold-out file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

IndexArray = NDArray[np.intp]


@dataclass(frozen=True)
class Split:
    """Row indices of each part; disjoint, together covering every row."""

    train: IndexArray
    validation: IndexArray
    test: IndexArray


def stratified_split(
    y: NDArray[Any],
    seed: int,
    validation: float = 0.2,
    test: float = 0.2,
    *,
    stratify: bool = True,
) -> Split:
    """Split rows into train / validation / test, each with the same class balance (a
    regression target, ``stratify=False``: shuffled rows)."""
    if not 0.0 < validation < 1.0 or not 0.0 < test < 1.0 or validation + test >= 1.0:
        raise ValueError(f"bad split fractions: validation={validation}, test={test}")
    rows = np.arange(len(y))
    rest, test_idx = train_test_split(
        rows, test_size=test, stratify=y if stratify else None, random_state=seed
    )
    train_idx, val_idx = train_test_split(
        rest,
        test_size=validation / (1.0 - test),
        stratify=y[rest] if stratify else None,
        random_state=seed + 1,
    )
    return Split(np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))


def holdout_halves(
    y: NDArray[Any], seed: int, *, stratify: bool = True
) -> tuple[IndexArray, IndexArray]:
    """Split a labelled hold-out set into a validation half and a test half (stratified by
    class; a regression target, ``stratify=False``: shuffled rows)."""
    rows = np.arange(len(y))
    val_idx, test_idx = train_test_split(
        rows, test_size=0.5, stratify=y if stratify else None, random_state=seed
    )
    return np.sort(val_idx), np.sort(test_idx)
