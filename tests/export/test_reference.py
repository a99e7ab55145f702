"""Reference statistics: quantile bins, open-ended outer bins, NaNs counted apart."""

from __future__ import annotations

import numpy as np

from export.reference import SCORE_EDGES, histogram, quantile_edges, reference_stats


def test_continuous_feature_gets_about_ten_equal_bins() -> None:
    values = np.random.default_rng(0).lognormal(size=10_000).astype(np.float32)
    edges = quantile_edges(values)
    hist = histogram(values, edges)
    assert len(edges) == 9 and len(hist.counts) == 10
    assert sum(hist.counts) == 10_000
    assert all(900 < c < 1100 for c in hist.counts)


def test_discrete_feature_edges_are_deduplicated() -> None:
    values = np.array([0.0] * 700 + [1.0] * 300, dtype=np.float32)
    edges = quantile_edges(values)
    assert edges == [0.0, 1.0]
    assert histogram(values, edges).counts == [0, 700, 300]


def test_bin_convention_is_left_closed() -> None:
    hist = histogram(np.array([-5.0, 1.0, 1.5, 2.0, 99.0]), [1.0, 2.0])
    assert hist.counts == [1, 2, 2]  # (-inf, 1), [1, 2), [2, inf)


def test_reference_counts_missing_values_apart() -> None:
    X = np.array([[1.0, np.nan], [2.0, 3.0], [3.0, np.nan], [4.0, 5.0]], dtype=np.float32)
    y = np.array([0, 1, 0, 0], dtype=np.int64)
    scores = np.array([0.01, 0.97, 0.5, 0.2])
    ref = reference_stats(X, y, scores, ["a", "b"], threshold=0.5)
    assert [f.name for f in ref.features] == ["a", "b"]
    assert ref.features[1].missing == 2 and sum(ref.features[1].histogram.counts) == 2
    assert ref.scores.bin_edges == SCORE_EDGES and sum(ref.scores.counts) == 4
    assert ref.scores.counts[0] == 1 and ref.scores.counts[-1] == 1
    assert ref.base_rate == 0.25 and ref.predicted_positive_rate == 0.5
