"""PSI, binned KS and the Kolmogorov tail against independent straightforward computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.monitoring.stats import (
    bin_index,
    kolmogorov_sf,
    ks_binned,
    ks_pvalue,
    psi,
    psi_status,
    worst,
)


def psi_by_hand(expected: list[int], actual: list[int], eps: float = 1e-4) -> float:
    """The documented formula with plain Python loops."""
    e_total, a_total = sum(expected), sum(actual)
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_share = max(e / e_total, eps)
        a_share = max(a / a_total, eps)
        total += (a_share - e_share) * math.log(a_share / e_share)
    return total


def test_psi_matches_hand_computation_on_fixed_counts() -> None:
    expected = [100, 200, 300, 400]
    actual = [150, 150, 350, 350]
    # Shares e = .1 .2 .3 .4, a = .15 .15 .35 .35:
    # .05 ln 1.5 - .05 ln .75 + .05 ln(7/6) - .05 ln .875
    by_formula = 0.05 * (math.log(1.5) - math.log(0.75) + math.log(7 / 6) - math.log(0.875))
    assert psi(expected, actual) == pytest.approx(by_formula, rel=1e-12)
    assert psi(expected, actual) == pytest.approx(psi_by_hand(expected, actual), rel=1e-12)


def test_psi_matches_loop_implementation_with_empty_bins() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        expected = [int(v) for v in rng.integers(0, 50, size=12)]
        actual = [int(v) for v in rng.integers(0, 50, size=12)]
        expected[3] = 0
        actual[5] = 0
        expected[8] = actual[8] = 0
        assert psi(expected, actual) == pytest.approx(psi_by_hand(expected, actual), rel=1e-12)


def test_psi_is_zero_for_equal_shares_and_symmetric() -> None:
    assert psi([1, 2, 3, 0], [10, 20, 30, 0]) == 0.0
    assert psi([5, 1, 9], [2, 7, 3]) == pytest.approx(psi([2, 7, 3], [5, 1, 9]))
    assert math.isnan(psi([0, 0], [1, 2]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_ks_binned_matches_loop_over_edges() -> None:
    expected = [10, 20, 30, 40]
    actual = [40, 30, 20, 10]
    gaps = []
    ce = ca = 0
    for e, a in zip(expected[:-1], actual[:-1], strict=True):
        ce += e
        ca += a
        gaps.append(abs(ce / 100 - ca / 100))
    assert ks_binned(expected, actual) == pytest.approx(max(gaps))  # 0.4 after the second bin
    assert ks_binned(expected, actual) == pytest.approx(0.4)
    assert ks_binned([5], [7]) == 0.0


@pytest.mark.parametrize(
    ("lam", "tail"),
    # Tail of the Kolmogorov distribution at well-known critical values.
    [(1.3581, 0.05), (1.2238, 0.10), (1.6276, 0.01), (0.8276, 0.50)],
)
def test_kolmogorov_tail_at_known_critical_values(lam: float, tail: float) -> None:
    assert kolmogorov_sf(lam) == pytest.approx(tail, abs=2e-4)


def test_kolmogorov_tail_is_continuous_where_the_series_switch() -> None:
    assert kolmogorov_sf(1.0 - 1e-12) == pytest.approx(kolmogorov_sf(1.0), abs=1e-10)
    assert kolmogorov_sf(0.1) == 1.0
    assert kolmogorov_sf(5.0) < 1e-20


def test_ks_pvalue_small_for_large_shift_and_large_for_none() -> None:
    assert ks_pvalue(0.3, 10_000, 1_000) < 1e-6
    assert ks_pvalue(0.01, 10_000, 1_000) > 0.5
    assert math.isnan(ks_pvalue(math.nan, 10, 10))


def test_bin_index_is_digitize_convention() -> None:
    edges = [0.0, 1.0, 2.0]
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
    assert bin_index(values, edges).tolist() == [0, 1, 1, 2, 3, 3]
    assert bin_index(values, edges).tolist() == np.digitize(values, edges).tolist()


def test_status_thresholds() -> None:
    kw = {"min_rows": 500, "watch": 0.1, "drift": 0.25}
    assert psi_status(0.5, 499, **kw) == "insufficient_data"
    assert psi_status(0.05, 500, **kw) == "ok"
    assert psi_status(0.1, 500, **kw) == "ok"
    assert psi_status(0.11, 500, **kw) == "watch"
    assert psi_status(0.26, 500, **kw) == "drift"
    assert psi_status(math.nan, 500, **kw) == "insufficient_data"
    assert worst(["ok", "drift", "watch"]) == "drift"
    assert worst(["insufficient_data", "ok"]) == "ok"
