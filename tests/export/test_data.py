"""The data generator: deterministic, fraud-like, with a shift that moves named features only."""

from __future__ import annotations

import numpy as np

from export.data import FRAUD_FEATURES, SHIFTED_FEATURES, breast_cancer_dataset, make_fraud


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
