"""Drift statistics on binned counts: PSI, a binned two-sample KS distance, and drift status.

Everything here works on *counts per bin*, never on raw rows: the reference side comes from
model.json (quantile histograms of the training split), the live side from the rolling window's
running totals. A histogram with edges ``e_0 < … < e_{k-1}`` has ``k + 1`` bins; bin ``i`` holds
``e_{i-1} <= x < e_i`` (open-ended outer bins), which is :func:`bin_index`. Drift monitoring appends
one more slot per feature for missing values (NaN), so missingness that the training data did not
have shows up as drift.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Status = Literal["insufficient_data", "ok", "watch", "drift"]
STATUS_LEVEL: Final[dict[Status, int]] = {"insufficient_data": -1, "ok": 0, "watch": 1, "drift": 2}
"""Numeric form of a status (for Prometheus and for taking the worst of several)."""

PSI_EPSILON: Final = 1e-4
"""Floor for a bin's share in PSI, so an empty bin on either side gives a finite term."""


def bin_index(values: ArrayLike, edges: ArrayLike) -> NDArray[np.intp]:
    """The bin of each value: the number of edges at or below it (``e_{i-1} <= x < e_i`` is bin i).

    This is the convention of ``np.digitize(x, edges)`` and of the monitor's vectorised binning;
    the exporter must count the reference histograms the same way, or integer-valued features
    (counts, flags) that sit exactly on an edge would show spurious drift. NaN goes to bin 0 here;
    the monitor counts it in a separate missing slot instead.
    """
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")


def psi(expected: ArrayLike, actual: ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """Population Stability Index of ``actual`` counts against ``expected`` counts.

    With ``e_i = max(expected_i / sum(expected), ε)`` and ``a_i = max(actual_i / sum(actual), ε)``::

        PSI = Σ_i (a_i - e_i) · ln(a_i / e_i)

    The floor ε (default 1e-4) keeps a bin that is empty on one side finite, and a bin empty on
    both sides contributes exactly 0 (shares are floored, not renormalised, so no bin that both
    sides agree on is perturbed). PSI is ≥ 0, symmetric, and 0 only for equal shares. On finite
    samples it is biased upwards by about ``(bins - 1) · (1/n + 1/N)``; that is why the monitor
    reports a status only from ``drift_min_rows`` rows on. Returns NaN when either side is empty.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"expected {e.shape} and actual {a.shape} counts differ in shape")
    e_total, a_total = e.sum(), a.sum()
    if e_total <= 0 or a_total <= 0:
        return math.nan
    e_share = np.maximum(e / e_total, epsilon)
    a_share = np.maximum(a / a_total, epsilon)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def ks_binned(expected: ArrayLike, actual: ArrayLike) -> float:
    """Largest gap between the two binned CDFs, read at the bin edges.

    ``expected`` and ``actual`` are counts over the same ``k + 1`` ordered bins (no missing slot).
    The reference is only known as a histogram, so the CDFs can be compared only at the edges:
    the result is a **lower bound** of the two-sample Kolmogorov-Smirnov statistic that the raw
    samples would give (the supremum over all x is at least the maximum over the edges). Returns
    NaN when either side is empty.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e_total, a_total = e.sum(), a.sum()
    if e_total <= 0 or a_total <= 0:
        return math.nan
    gaps = np.abs(np.cumsum(e)[:-1] / e_total - np.cumsum(a)[:-1] / a_total)
    return float(gaps.max()) if gaps.size else 0.0


def kolmogorov_sf(lam: float) -> float:
    """P(K > λ) for the Kolmogorov distribution (the asymptotic law of √n·D).

    Two series, each used where it converges fast: for λ ≥ 1 the alternating series
    ``2 Σ_{k≥1} (-1)^{k-1} exp(-2k²λ²)``; below that the Jacobi-theta form of the CDF,
    ``√(2π)/λ · Σ_{k≥1} exp(-(2k-1)²π²/(8λ²))``, subtracted from 1.
    """
    if not math.isfinite(lam):
        return math.nan
    if lam <= 0.0:
        return 1.0
    k = np.arange(1, 101, dtype=np.float64)
    if lam >= 1.0:
        terms = np.exp(-2.0 * k * k * lam * lam)
        signs = np.where(k % 2 == 1, 1.0, -1.0)
        sf = 2.0 * float(np.sum(signs * terms))
    else:
        odd = 2.0 * k - 1.0
        cdf = (
            math.sqrt(2.0 * math.pi)
            / lam
            * float(np.sum(np.exp(-odd * odd * math.pi**2 / (8.0 * lam * lam))))
        )
        sf = 1.0 - cdf
    return min(1.0, max(0.0, sf))


def ks_pvalue(distance: float, n_expected: int, n_actual: int) -> float:
    """Asymptotic p-value of a two-sample KS distance (Stephens' small-sample correction).

    ``λ = (√m + 0.12 + 0.11/√m) · D`` with ``m = n·N/(n+N)``. Because :func:`ks_binned` is a lower
    bound of D, and binned (tied) data make the test conservative anyway, this p-value is an
    upper bound: a small value is real evidence of a changed distribution, a large one proves
    nothing. With thousands of rows even a practically irrelevant shift gives a tiny p-value;
    the monitor's status therefore follows PSI, and the KS numbers are reported beside it.
    """
    if not math.isfinite(distance) or n_expected <= 0 or n_actual <= 0:
        return math.nan
    m = n_expected * n_actual / (n_expected + n_actual)
    root = math.sqrt(m)
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * distance)


def psi_status(value: float, rows: int, *, min_rows: int, watch: float, drift: float) -> Status:
    """ok / watch (PSI > watch) / drift (PSI > drift); "insufficient_data" below ``min_rows``."""
    if rows < min_rows or not math.isfinite(value):
        return "insufficient_data"
    if value > drift:
        return "drift"
    if value > watch:
        return "watch"
    return "ok"


def worst(statuses: list[Status]) -> Status:
    """The most severe status of several ("insufficient_data" only if every one is)."""
    if not statuses:
        return "insufficient_data"
    return max(statuses, key=STATUS_LEVEL.__getitem__)
