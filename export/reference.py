"""Reference statistics for drift monitoring: what the training rows and the model's answers on
them looked like, stored in ``model.json`` for the server's monitor to compare live traffic with.

Per input column (rows as the row matrix, ``server.columns``):

- numeric: a histogram over about ten quantile bins, NaNs counted apart (``missing``);
- boolean: a histogram with the one edge 0.5 (false, true), NaNs apart: quantile edges of a flag
  that is rarely true in training would all be 0 and put true and false in one bin;
- categorical: rows per known category (``category_counts``, in the column's ``categories``
  order), codes outside them (``unseen``, -1) and NaNs (``missing``).

Per task, the model's answers (``scores``):

- binary: the positive-class score on fixed edges 0.05, 0.10, …, 0.95; with the positive rate of
  the labels (``base_rate``) and of the answers at the threshold (``predicted_positive_rate``);
- multiclass: the predicted class's index (argmax) on edges 0.5, 1.5, …, k-1.5 (one bin a
  class); with each class's share of the labels (``class_shares``);
- regression: the predicted value on quantile edges of the training predictions (so every bin
  holds about a tenth of them); with the target's mean (``target_mean``).

Bin convention (shared with the server's monitor): with increasing edges ``e``, a value ``x``
falls in bin ``searchsorted(e, x, side="right")`` (= ``numpy.digitize(x, e)``), so bin 0 is
``x < e[0]``, bin i is ``e[i-1] <= x < e[i]`` and the last bin is ``x >= e[-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.modelcard import Column, FeatureReference, Histogram, Label, Reference, Task

FEATURE_BINS = 10
PREDICTION_BINS = 10
"""Quantile bins of a regressor's training predictions."""
BOOLEAN_EDGES: list[float] = [0.5]
"""A boolean column's bins: false (0), true (1)."""
SCORE_EDGES: list[float] = [round(0.05 * i, 2) for i in range(1, 20)]
"""Fixed score bin edges 0.05, 0.10, …, 0.95 (20 bins)."""


def histogram(values: NDArray[np.floating[Any]], edges: list[float]) -> Histogram:
    """Count finite ``values`` into the open-ended bins around ``edges``."""
    finite = values[~np.isnan(values)]
    bins = np.searchsorted(
        np.asarray(edges, dtype=np.float64), finite.astype(np.float64), side="right"
    )
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return Histogram(bin_edges=list(edges), counts=[int(c) for c in counts])


def quantile_edges(values: NDArray[np.floating[Any]], bins: int = FEATURE_BINS) -> list[float]:
    """Inner quantile edges for about ``bins`` bins; duplicates (discrete features) removed."""
    finite = values[~np.isnan(values)].astype(np.float64)
    if finite.size == 0:
        return []
    # Observed values as edges (no interpolation), so a discrete feature's edges are its values.
    qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1], method="inverted_cdf")
    return [float(e) for e in np.unique(qs)]


def class_edges(k: int) -> list[float]:
    """Edges 0.5, 1.5, …, k-1.5: one bin per class index 0 … k-1."""
    return [i + 0.5 for i in range(k - 1)]


def feature_reference(column: Column, values: NDArray[np.float32]) -> FeatureReference:
    """One column of the row matrix as its reference (histogram, or category counts)."""
    missing = np.isnan(values)
    if column.kind == "boolean":
        return FeatureReference(
            name=column.name, histogram=histogram(values, BOOLEAN_EDGES), missing=int(missing.sum())
        )
    if column.kind != "categorical":
        return FeatureReference(
            name=column.name,
            histogram=histogram(values, quantile_edges(values)),
            missing=int(missing.sum()),
        )
    k = len(column.categories)
    codes = values[~missing]
    known = (codes >= 0) & (codes < k)
    counts = np.bincount(codes[known].astype(np.intp), minlength=k)
    return FeatureReference(
        name=column.name,
        category_counts=[int(c) for c in counts],
        unseen=int(codes.size - known.sum()),
        missing=int(missing.sum()),
    )


def reference_stats(
    columns: Sequence[Column],
    X: NDArray[np.float32],
    y: NDArray[Any],
    outputs: NDArray[np.floating[Any]],
    task: Task,
    classes: Sequence[Label],
    threshold: float | None,
    *,
    positive_class: Label | None = None,
) -> Reference:
    """The reference of the training rows ``X`` (row matrix), their labels ``y`` and the model's
    ``outputs`` on them.

    ``y``: the class index into ``classes`` (classifiers) or the target (regression).
    ``outputs``: float [n, k] class probabilities in the order of ``classes`` (a binary model's
    positive score alone, [n], is taken too), or a regressor's predictions [n, 1] or [n].
    ``threshold``: binary only, on the positive class's score. ``positive_class``: binary only,
    the class the threshold applies to; by default the last of ``classes`` (the card's rule when
    it names none).
    """
    if X.ndim != 2 or X.shape[1] != len(columns):
        raise ValueError(f"X has shape {X.shape}, expected [n, {len(columns)}]")
    features = [feature_reference(c, X[:, j]) for j, c in enumerate(columns)]
    out = np.asarray(outputs, dtype=np.float64)
    if task == "regression":
        predicted = out.reshape(-1)
        return Reference(
            features=features,
            scores=histogram(predicted, quantile_edges(predicted, PREDICTION_BINS)),
            target_mean=float(np.mean(np.asarray(y, dtype=np.float64))),
        )
    k = len(classes)
    labels = np.asarray(y, dtype=np.int64)
    if task == "multiclass":
        if out.ndim != 2 or out.shape[1] != k:
            raise ValueError(f"outputs have shape {out.shape}, expected [n, {k}]")
        predicted_class = out.argmax(axis=1).astype(np.float64)
        shares = np.bincount(labels, minlength=k)[:k] / max(labels.size, 1)
        return Reference(
            features=features,
            scores=histogram(predicted_class, class_edges(k)),
            class_shares=[float(s) for s in shares],
        )
    positive_index = k - 1 if positive_class is None else list(classes).index(positive_class)
    positive = out if out.ndim == 1 else out[:, positive_index]
    cut = 0.5 if threshold is None else threshold
    return Reference(
        features=features,
        scores=histogram(positive, SCORE_EDGES),
        base_rate=float(np.mean(labels == positive_index)),
        predicted_positive_rate=float(np.mean(positive >= cut)),
    )
