"""Reference statistics: quantile bins, open-ended outer bins, NaNs counted apart; category
counts; the answers per task."""

from __future__ import annotations

import numpy as np
import pytest

from export.reference import (
    SCORE_EDGES,
    class_edges,
    histogram,
    quantile_edges,
    reference_stats,
)
from server.columns import UNSEEN
from server.modelcard import Column, Label, Task, card_problems, placeholder_card

NUMERIC = [Column(name="a"), Column(name="b")]


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
    probabilities = np.column_stack([1.0 - scores, scores])
    ref = reference_stats(NUMERIC, X, y, probabilities, "binary", [0, 1], threshold=0.5)
    assert [f.name for f in ref.features] == ["a", "b"]
    assert ref.features[1].missing == 2 and sum(ref.features[1].histogram.counts) == 2
    assert ref.scores.bin_edges == SCORE_EDGES and sum(ref.scores.counts) == 4
    assert ref.scores.counts[0] == 1 and ref.scores.counts[-1] == 1
    assert ref.base_rate == 0.25 and ref.predicted_positive_rate == 0.5
    assert ref.class_shares is None and ref.target_mean is None


def test_binary_positive_class_is_the_named_one() -> None:
    """String labels whose positive class sorts first: its score column is column 0."""
    X = np.zeros((4, 2), dtype=np.float32)
    y = np.array([0, 0, 0, 1], dtype=np.int64)  # index into classes
    churn = np.array([0.9, 0.8, 0.7, 0.1])  # score of "churned" (column 0)
    probabilities = np.column_stack([churn, 1.0 - churn])
    ref = reference_stats(
        NUMERIC,
        X,
        y,
        probabilities,
        "binary",
        ["churned", "stayed"],
        threshold=0.75,
        positive_class="churned",
    )
    assert ref.base_rate == 0.75
    assert ref.predicted_positive_rate == 0.5
    assert ref.scores.counts[18] == 1  # 0.9: the bin [0.90, 0.95)


def test_categorical_columns_count_categories_unseen_and_missing() -> None:
    region = Column(name="region", kind="categorical", categories=["north", "south", "west"])
    codes = np.array([[0], [0], [1], [2], [2], [2], [UNSEEN], [np.nan]], dtype=np.float32)
    ref = reference_stats(
        [region], codes, np.zeros(8, dtype=np.int64), np.full((8, 2), 0.5), "binary", [0, 1], 0.5
    )
    (feature,) = ref.features
    assert feature.histogram is None
    assert feature.category_counts == [2, 1, 3]
    assert (feature.unseen, feature.missing) == (1, 1)


def test_multiclass_scores_are_the_predicted_class() -> None:
    X = np.zeros((6, 2), dtype=np.float32)
    y = np.array([0, 1, 2, 2, 2, 1], dtype=np.int64)
    probabilities = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.3, 0.3, 0.4],
            [0.5, 0.2, 0.3],
            [0.2, 0.7, 0.1],
        ]
    )
    ref = reference_stats(NUMERIC, X, y, probabilities, "multiclass", ["a", "b", "c"], None)
    assert ref.scores.bin_edges == class_edges(3) == [0.5, 1.5]
    assert ref.scores.counts == [2, 2, 2]  # predicted a (rows 0, 4), b (1, 5), c (2, 3)
    assert ref.class_shares == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert ref.base_rate is None and ref.predicted_positive_rate is None


def test_regression_scores_are_quantile_bins_of_the_predictions() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5_000, 2)).astype(np.float32)
    target = rng.normal(100.0, 20.0, size=5_000)
    predicted = (target + rng.normal(0.0, 5.0, size=5_000)).reshape(-1, 1)
    ref = reference_stats(NUMERIC, X, target, predicted, "regression", [], None)
    assert len(ref.scores.bin_edges) == 9
    assert all(450 < c < 550 for c in ref.scores.counts)
    assert ref.target_mean == pytest.approx(float(target.mean()))
    assert ref.base_rate is None and ref.class_shares is None


def test_the_reference_is_a_valid_card_reference() -> None:
    """The card validator takes what reference_stats makes, for every task."""
    region = Column(
        name="region", kind="categorical", categories=["north", "south"], unknown="serve"
    )
    columns = [region, Column(name="amount")]
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.integers(0, 2, 300), rng.normal(size=300)]).astype(np.float32)
    cases: list[tuple[Task, list[Label], np.ndarray, np.ndarray]] = [
        ("binary", [0, 1], rng.integers(0, 2, 300), rng.dirichlet([1, 1], 300)),
        ("multiclass", ["x", "y", "z"], rng.integers(0, 3, 300), rng.dirichlet([1, 1, 1], 300)),
        ("regression", [], rng.normal(size=300), rng.normal(size=(300, 1))),
    ]
    for task, classes, y, outputs in cases:
        ref = reference_stats(columns, X, y, outputs, task, classes, 0.5)
        card = placeholder_card(columns=columns, task=task, classes=classes or None, reference=ref)
        assert card_problems(card) == [], task


def test_boolean_columns_get_a_false_and_a_true_bin() -> None:
    """A flag true in 1% of training rows: quantile edges would all be 0 (one bin for both)."""
    flag = Column(name="gift", kind="boolean", allow_missing=True)
    values = np.zeros((1_000, 1), dtype=np.float32)
    values[:10, 0] = 1.0
    values[10:15, 0] = np.nan
    ref = reference_stats(
        [flag], values, np.zeros(1_000), np.full((1_000, 1), 2.0), "regression", [], None
    )
    hist = ref.features[0].histogram
    assert hist is not None
    assert (hist.bin_edges, hist.counts, ref.features[0].missing) == ([0.5], [985, 10], 5)
