"""Typed test data: a region (categorical) and an amount (numeric) column, and cards for each task
whose reference comes from ``export.reference.reference_stats`` on generated training rows."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from export.reference import reference_stats
from server.columns import UNSEEN
from server.modelcard import Column, Label, ModelCard, Task, placeholder_card

REGIONS = ["north", "south", "east", "west"]
COLUMNS = [
    Column(name="region", kind="categorical", categories=list(REGIONS), unknown="serve"),
    Column(name="amount"),
]
SHARES = [0.4, 0.3, 0.2, 0.1]
"""Training shares of the regions."""
CLASSES: list[Label] = ["low", "mid", "high"]


def rows(
    n: int, seed: int, *, shares: list[float] = SHARES, unseen: float = 0.0, amount_shift: float = 0
) -> NDArray[np.float32]:
    """Row matrix [n, 2]: region codes drawn with ``shares`` (a share ``unseen`` of rows get
    :data:`UNSEEN`), amounts lognormal."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(len(REGIONS), size=n, p=shares).astype(np.float32)
    codes[rng.random(n) < unseen] = UNSEEN
    amount = rng.lognormal(3.0 + amount_shift, 0.5, size=n)
    return np.column_stack([codes, amount]).astype(np.float32)


def class_probabilities(X: NDArray[np.float32], tilt: float = 0.0) -> NDArray[np.float32]:
    """[n, 3] scores of a stand-in multiclass model: the amount decides the class; ``tilt``
    moves every row's scores towards "high"."""
    z = (np.log(np.maximum(X[:, 1], 1e-3)) - 3.0) / 0.5
    logits = np.column_stack([-z, np.zeros_like(z), z + tilt])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def predicted_values(X: NDArray[np.float32], shift: float = 0.0) -> NDArray[np.float32]:
    """[n, 1] predictions of a stand-in regressor: twice the amount plus a region effect."""
    region_effect = np.where(X[:, 0] >= 0, X[:, 0], 0.0) * 5.0
    return (2.0 * X[:, 1] + region_effect + shift).reshape(-1, 1).astype(np.float32)


def typed_card(task: Task, n: int = 20_000, seed: int = 0) -> ModelCard:
    """A card for ``task`` over :data:`COLUMNS`, its reference computed from ``n`` rows."""
    X = rows(n, seed)
    classes: list[Label]
    if task == "multiclass":
        classes = CLASSES
        outputs = class_probabilities(X)
        y = outputs.argmax(axis=1)
    elif task == "regression":
        classes = []
        outputs = predicted_values(X)
        y = outputs[:, 0] + np.random.default_rng(seed).normal(0, 3.0, size=n)
    else:
        classes = [0, 1]
        p = 1.0 / (1.0 + np.exp(-(X[:, 1] - 25.0) / 5.0))
        outputs = np.column_stack([1.0 - p, p])
        y = (p > 0.5).astype(np.int64)
    reference = reference_stats(COLUMNS, X, y, outputs, task, classes, 0.5)
    return placeholder_card(
        f"typed-{task}", columns=COLUMNS, task=task, classes=classes or None, reference=reference
    )
