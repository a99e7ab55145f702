"""Reference statistics for drift monitoring: feature and score histograms of training rows.

Bin convention (shared with the server's monitor): with increasing edges ``e``, a value ``x``
falls in bin ``searchsorted(e, x, side="right")`` (= ``numpy.digitize(x, e)``), so bin 0 is
``x < e[0]``, bin i is ``e[i-1] <= x < e[i]`` and the last bin is ``x >= e[-1]``. NaNs are counted
apart, in ``missing``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from server.modelcard import FeatureReference, Histogram, Reference

FEATURE_BINS = 10
SCORE_EDGES: list[float] = [round(0.05 * i, 2) for i in range(1, 20)]
"""Fixed score bin edges 0.05, 0.10, …, 0.95 (20 bins)."""


def histogram(values: NDArray[np.floating], edges: list[float]) -> Histogram:
    """Count finite ``values`` into the open-ended bins around ``edges``."""
    finite = values[~np.isnan(values)]
    bins = np.searchsorted(
        np.asarray(edges, dtype=np.float64), finite.astype(np.float64), side="right"
    )
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return Histogram(bin_edges=list(edges), counts=[int(c) for c in counts])


def quantile_edges(values: NDArray[np.floating], bins: int = FEATURE_BINS) -> list[float]:
    """Inner quantile edges for about ``bins`` bins; duplicates (discrete features) removed."""
    finite = values[~np.isnan(values)].astype(np.float64)
    if finite.size == 0:
        return []
    # Observed values as edges (no interpolation), so a discrete feature's edges are its values.
    qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1], method="inverted_cdf")
    return [float(e) for e in np.unique(qs)]


def reference_stats(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    scores: NDArray[np.float64],
    feature_names: list[str],
    threshold: float,
) -> Reference:
    """Per-feature quantile histograms of ``X`` and the histogram of positive-class ``scores``."""
    features = [
        FeatureReference(
            name=name,
            histogram=histogram(X[:, j], quantile_edges(X[:, j])),
            missing=int(np.isnan(X[:, j]).sum()),
        )
        for j, name in enumerate(feature_names)
    ]
    return Reference(
        features=features,
        scores=histogram(scores, SCORE_EDGES),
        base_rate=float(np.mean(y)),
        predicted_positive_rate=float(np.mean(scores >= threshold)),
    )
