"""The data generators: deterministic by seed, with a shift knob for drift demos.

Fraud: a shift that moves named features only. E-commerce (pricing, returns): typed columns
(string categories, numbers, booleans), a regression target and string class labels, and a shift
that moves category shares and a few numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from export.data import (
    FRAUD_FEATURES,
    PRICING_COLUMNS,
    PRICING_SHIFTED,
    RETURN_REASONS,
    RETURNS_COLUMNS,
    RETURNS_SHIFTED,
    SHIFTED_FEATURES,
    Dataset,
    breast_cancer_dataset,
    fraud_dataset,
    make_fraud,
    pricing_dataset,
    returns_dataset,
)


def test_fraud_data_shape_and_balance() -> None:
    X, y, names = make_fraud(20_000, seed=3)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.shape == (20_000, len(names)) and len(names) >= 20
    assert names == list(FRAUD_FEATURES)
    assert 0.015 < y.mean() < 0.035
    assert np.isfinite(X).all()


def test_fraud_data_is_deterministic_by_seed() -> None:
    X1, y1, _ = make_fraud(2_000, seed=7)
    X2, y2, _ = make_fraud(2_000, seed=7)
    X3, _, _ = make_fraud(2_000, seed=8)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_some_features_are_heavy_tailed() -> None:
    X, _, names = make_fraud(20_000, seed=0)
    amount = X[:, names.index("amount")]
    assert np.quantile(amount, 0.999) > 20 * np.median(amount)


def test_shift_moves_exactly_the_shifted_features() -> None:
    X0, y0, names = make_fraud(5_000, seed=1, shift=0.0)
    X1, y1, _ = make_fraud(5_000, seed=1, shift=1.0)
    changed = {n for j, n in enumerate(names) if not np.array_equal(X0[:, j], X1[:, j])}
    assert changed == set(SHIFTED_FEATURES)
    for name in SHIFTED_FEATURES:
        j = names.index(name)
        assert abs(np.median(X1[:, j]) - np.median(X0[:, j])) > 0.1 * abs(np.median(X0[:, j])) or (
            X1[:, j].mean() > X0[:, j].mean() + 0.3
        )
    assert y1.mean() > y0.mean()


def test_breast_cancer_is_the_bundled_real_data() -> None:
    data = breast_cancer_dataset()
    assert data.X.shape == (569, 30) and data.X.dtype == np.float32
    assert set(np.unique(data.y)) == {0, 1}
    assert int(data.y.sum()) == 212  # malignant cases
    assert len(set(data.feature_names)) == 30


# --- e-commerce data with typed columns ----------------------------------------------------------


def _shares(codes: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(codes.astype(np.int64), minlength=k) / len(codes)


def test_pricing_data_has_3_string_and_20_numeric_columns() -> None:
    data = pricing_dataset(4_000, seed=3)
    kinds = [c.kind for c in data.input_columns]
    assert kinds == ["categorical"] * 3 + ["numeric"] * 20
    assert data.feature_names == [c.name for c in PRICING_COLUMNS]
    assert data.feature_names[:3] == ["category", "channel", "region"]
    assert data.X.shape == (4_000, 23) and data.X.dtype == np.float32
    assert np.isfinite(data.X).all()
    for j, column in enumerate(data.input_columns[:3]):
        assert all(isinstance(c, str) for c in column.categories)
        assert set(np.unique(data.X[:, j])) == set(range(len(column.categories)))
    assert data.task == "regression" and data.classes == () and data.positive_class is None
    assert data.y.dtype == np.float64 and (data.y >= 0).all()
    assert np.array_equal(data.y, np.round(data.y))  # units sold: a count
    assert data.y.std() > 0.5 * data.y.mean()  # some listings sell far more than others


def test_pricing_demand_falls_with_price_and_rises_with_discount() -> None:
    data = pricing_dataset(20_000, seed=0)
    column = {name: data.X[:, j] for j, name in enumerate(data.feature_names)}
    discounted = column["discount_pct"] > 0.2
    assert data.y[discounted].mean() > 1.3 * data.y[column["discount_pct"] == 0].mean()
    dear = column["competitor_price_ratio"] > 1.15
    cheap = column["competitor_price_ratio"] < 0.9
    assert data.y[cheap].mean() > data.y[dear].mean()


def test_returns_data_has_string_labels_and_typed_columns() -> None:
    data = returns_dataset(6_000, seed=3)
    assert data.task == "multiclass" and data.classes == RETURN_REASONS
    assert list(data.classes) == sorted(data.classes)  # scikit-learn's order of string labels
    assert [c.kind for c in data.input_columns] == (
        ["categorical"] * 3 + ["numeric"] * 14 + ["boolean"] * 3
    )
    assert data.input_columns == list(RETURNS_COLUMNS)
    assert data.y.dtype == np.int64
    shares = _shares(data.y, len(RETURN_REASONS))
    assert shares.min() > 0.05 and shares.max() < 0.45  # every reason common enough to learn
    flags = data.X[:, -3:]
    assert set(np.unique(flags)) == {0.0, 1.0}


@pytest.mark.parametrize("make", [pricing_dataset, returns_dataset])
def test_ecommerce_data_is_deterministic_by_seed(make: Callable[..., Dataset]) -> None:
    a, b, c = make(2_000, seed=7), make(2_000, seed=7), make(2_000, seed=8)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert a.params == b.params and a.params != c.params
    assert not np.array_equal(a.X, c.X)


def test_pricing_shift_moves_category_shares_prices_and_demand() -> None:
    base, shifted = pricing_dataset(20_000, seed=1), pricing_dataset(20_000, seed=1, shift=1.0)
    names = base.feature_names
    categories = list(PRICING_COLUMNS[0].categories)
    before, after = _shares(base.X[:, 0], 8), _shares(shifted.X[:, 0], 8)
    for grows in ("electronics", "toys_games"):
        assert after[categories.index(grows)] > before[categories.index(grows)] + 0.05
    assert after[categories.index("fashion")] < before[categories.index("fashion")] - 0.05
    channels = list(PRICING_COLUMNS[1].categories)
    social = channels.index("social_commerce")
    assert _shares(shifted.X[:, 1], 4)[social] > 2 * _shares(base.X[:, 1], 4)[social]
    for name in ("discount_pct", "competitor_price_ratio"):
        j = names.index(name)
        assert shifted.X[:, j].mean() > base.X[:, j].mean() * 1.05, name
    # Region shares are not in the shift: the same draws, the same codes.
    assert np.array_equal(base.X[:, 2], shifted.X[:, 2])
    assert set(PRICING_SHIFTED) <= set(names)
    assert shifted.params["shift"] == 1.0 and base.params["shift"] == 0.0


def test_returns_shift_moves_categories_carriers_delays_and_reasons() -> None:
    base, shifted = returns_dataset(20_000, seed=1), returns_dataset(20_000, seed=1, shift=1.0)
    names = base.feature_names
    carriers = list(RETURNS_COLUMNS[2].categories)
    local = carriers.index("local_courier")
    assert _shares(shifted.X[:, 2], 5)[local] > 2 * _shares(base.X[:, 2], 5)[local]
    categories = list(RETURNS_COLUMNS[0].categories)
    fashion = categories.index("fashion")
    assert _shares(shifted.X[:, 0], 7)[fashion] < _shares(base.X[:, 0], 7)[fashion] - 0.05
    delay = names.index("delivery_delay_days")
    assert shifted.X[:, delay].mean() > 2 * base.X[:, delay].mean()
    late = RETURN_REASONS.index("arrived_late")
    assert _shares(shifted.y, 5)[late] > 1.5 * _shares(base.y, 5)[late]
    assert set(RETURNS_SHIFTED) <= set(names)
    assert np.array_equal(base.X[:, 1], shifted.X[:, 1])  # the channel is not in the shift


def test_records_give_the_raw_values_back() -> None:
    data = returns_dataset(50, seed=0)
    rows = data.records(slice(0, 3))
    assert len(rows) == 3 and list(rows[0]) == data.feature_names
    for i, row in enumerate(rows):
        for j, column in enumerate(data.input_columns):
            value = row[column.name]
            if column.kind == "categorical":
                assert value == column.categories[int(data.X[i, j])]
            elif column.kind == "boolean":
                assert value is bool(data.X[i, j] == 1.0)
            else:
                assert value == pytest.approx(float(data.X[i, j]))
    picked = data.records(np.array([2, 0]))
    assert picked == [rows[2], rows[0]]
    assert json.loads(json.dumps(picked)) == picked  # plain JSON values, ready for a request


def test_concept_moves_the_labels_and_nothing_else() -> None:
    X0, y0, _ = make_fraud(20_000, seed=4, shift=1.0)
    X1, y1, _ = make_fraud(20_000, seed=4, shift=1.0, concept=1.0)
    np.testing.assert_array_equal(X0, X1)  # no feature moves: a drift monitor cannot see it
    assert (y0 != y1).mean() > 0.02
    # the old patterns fade: positives among the riskiest merchant-and-IP rows fall
    risky = X0[:, FRAUD_FEATURES.index("merchant_risk_score")] > 0.6
    assert y1[risky].mean() < y0[risky].mean()
    assert "concept" not in fraud_dataset(100, seed=0).params
    assert fraud_dataset(100, seed=0, concept=1.0).params["concept"] == 1.0
