"""Data sets: a synthetic fraud-style generator and scikit-learn's bundled breast cancer data.

The fraud generator draws independent "root" features, derives the rest from them, and labels
rows with a non-linear logit plus label noise (about 2.5% positives). ``shift`` moves the
distributions of exactly the features in :data:`SHIFTED_FEATURES`; no other feature is computed
from them, so shifted traffic drifts on those features and no others (the label rate moves too,
because the labels depend on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
LabelArray = NDArray[np.int64]

GENERATOR_VERSION = 1
"""Bump when the generator's output changes, so bundled models' fingerprints change too."""

FRAUD_FEATURES: tuple[str, ...] = (
    "amount",
    "customer_avg_amount",
    "amount_to_avg_ratio",
    "hour_of_day",
    "seconds_since_last_txn",
    "txn_count_1h",
    "txn_count_24h",
    "txn_count_7d",
    "distinct_merchants_24h",
    "amount_sum_24h",
    "distance_from_home_km",
    "merchant_risk_score",
    "ip_risk_score",
    "email_domain_risk",
    "account_age_days",
    "device_age_days",
    "days_since_password_change",
    "failed_logins_24h",
    "chargebacks_90d",
    "devices_30d",
    "credit_utilization",
    "avg_session_seconds",
    "card_present",
    "foreign_txn",
)
"""Feature names of :func:`make_fraud`, in column order."""

SHIFTED_FEATURES: tuple[str, ...] = (
    "distance_from_home_km",
    "merchant_risk_score",
    "account_age_days",
    "txn_count_1h",
)
"""The features whose distributions ``shift`` moves; every other feature is unaffected."""

# Chosen once so that shift=0 gives about 2.5% positives and a learnable but noisy signal.
_INTERCEPT = -7.61
_STRENGTH = 2.0
_NOISE = 0.5


@dataclass(frozen=True)
class Dataset:
    """A labelled data set: float32 features, int64 labels, feature names and provenance."""

    name: str
    X: FloatArray
    y: LabelArray
    feature_names: list[str]
    source: str
    params: dict[str, str | int | float]
    """What determines the data (generator parameters or package version), for fingerprints."""


def make_fraud(
    n_rows: int = 100_000, seed: int = 0, shift: float = 0.0
) -> tuple[FloatArray, LabelArray, list[str]]:
    """Generate ``n_rows`` fraud-style transactions; deterministic for a given seed and shift.

    ``shift`` (0 = training distribution; 1 = a strong drift) moves :data:`SHIFTED_FEATURES`:
    transactions happen farther from home, at riskier merchants, from younger accounts, in
    faster bursts.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    n = n_rows
    # One independent stream per draw, so that a shifted draw (which may consume a different
    # amount of randomness) leaves every other feature's values exactly unchanged.
    streams = iter(np.random.default_rng(seed).spawn(32))

    def rng() -> np.random.Generator:
        return next(streams)

    # Root features (independent draws).
    customer_avg = rng().lognormal(mean=3.8, sigma=0.8, size=n)
    spend_factor = rng().lognormal(mean=0.0, sigma=0.7, size=n)
    hour = rng().vonmises(mu=np.pi * (14 / 12 - 1), kappa=1.2, size=n) * 12 / np.pi + 12
    seconds_since = rng().exponential(scale=3600.0, size=n) * rng().pareto(2.5, size=n)
    activity = rng().gamma(shape=2.0, scale=1.5, size=n)
    distance = rng().lognormal(mean=2.0 + 1.2 * shift, sigma=1.3, size=n)
    merchant_risk = rng().beta(a=2.0 + 3.0 * shift, b=8.0, size=n)
    ip_risk = rng().beta(a=1.5, b=10.0, size=n)
    email_risk = rng().beta(a=1.2, b=6.0, size=n)
    account_age = rng().gamma(shape=1.5, scale=500.0 / (1.0 + 2.0 * shift), size=n)
    device_age = rng().gamma(shape=1.2, scale=200.0, size=n)
    pw_change = rng().exponential(scale=180.0, size=n)
    failed_logins = rng().poisson(lam=0.15, size=n)
    chargebacks = rng().poisson(lam=0.05, size=n)
    devices = 1 + rng().poisson(lam=0.4, size=n)
    utilization = rng().beta(a=2.0, b=4.0, size=n)
    session = rng().lognormal(mean=5.0, sigma=0.9, size=n)
    card_present = (rng().random(n) < 0.55).astype(np.float64)
    foreign = (rng().random(n) < 0.08).astype(np.float64)
    burst = rng().poisson(lam=0.3 + 0.8 * shift, size=n)

    # Derived features (computed only from non-shifted roots, except txn_count_1h = burst).
    amount = customer_avg * spend_factor
    ratio = amount / customer_avg
    txn_1h = burst.astype(np.float64)
    txn_24h = rng().poisson(lam=1.0 + activity * 2.0)
    txn_7d = txn_24h + rng().poisson(lam=activity * 12.0)
    merchants_24h = np.minimum(txn_24h, rng().poisson(lam=0.8 + activity))
    amount_sum_24h = customer_avg * (txn_24h + rng().gamma(shape=1.0, scale=1.0, size=n))

    night = np.exp(-(((hour - 3.0) / 2.5) ** 2))
    signal = (
        1.3 * np.log1p(ratio) * (1.0 + 1.5 * night)
        + 1.1 * np.tanh((np.log1p(distance) - 3.5) * 1.5) * (1.0 + foreign)
        + 4.0 * merchant_risk * ip_risk * 6.0
        + 0.9 * np.exp(-account_age / 120.0) * np.log1p(amount / 50.0)
        + 0.6 * np.minimum(txn_1h, 4.0)
        + 0.7 * foreign * (1.0 - card_present)
        + 0.5 * np.minimum(failed_logins, 3)
        + 0.8 * np.minimum(chargebacks, 2)
        + 1.2 * email_risk * (devices > 2)
        - 0.4 * card_present
        + 0.5 * np.sin(utilization * 6.0) * (utilization > 0.5)
        - 0.3 * np.log1p(device_age / 30.0)
    )
    logit = _INTERCEPT + _STRENGTH * signal + rng().normal(scale=_NOISE, size=n)
    y = (rng().random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    columns = {
        "amount": amount,
        "customer_avg_amount": customer_avg,
        "amount_to_avg_ratio": ratio,
        "hour_of_day": hour,
        "seconds_since_last_txn": seconds_since,
        "txn_count_1h": txn_1h,
        "txn_count_24h": txn_24h,
        "txn_count_7d": txn_7d,
        "distinct_merchants_24h": merchants_24h,
        "amount_sum_24h": amount_sum_24h,
        "distance_from_home_km": distance,
        "merchant_risk_score": merchant_risk,
        "ip_risk_score": ip_risk,
        "email_domain_risk": email_risk,
        "account_age_days": account_age,
        "device_age_days": device_age,
        "days_since_password_change": pw_change,
        "failed_logins_24h": failed_logins,
        "chargebacks_90d": chargebacks,
        "devices_30d": devices,
        "credit_utilization": utilization,
        "avg_session_seconds": session,
        "card_present": card_present,
        "foreign_txn": foreign,
    }
    X = np.column_stack([columns[name] for name in FRAUD_FEATURES]).astype(np.float32)
    return X, y, list(FRAUD_FEATURES)


def fraud_dataset(n_rows: int = 100_000, seed: int = 0, shift: float = 0.0) -> Dataset:
    """:func:`make_fraud` wrapped as a :class:`Dataset`."""
    X, y, names = make_fraud(n_rows, seed, shift)
    params: dict[str, str | int | float] = {
        "generator": "export.data.make_fraud",
        "generator_version": GENERATOR_VERSION,
        "n_rows": n_rows,
        "seed": seed,
        "shift": shift,
    }
    source = f"synthetic: export.data.make_fraud(n_rows={n_rows}, seed={seed}, shift={shift})"
    return Dataset("fraud", X, y, names, source, params)


def breast_cancer_dataset() -> Dataset:
    """scikit-learn's bundled Wisconsin breast cancer data (569 rows, 30 features).

    Relabelled so that 1 = malignant (the rarer class, 37%), the class a screening model flags.
    """
    import sklearn
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    X = np.asarray(bunch.data, dtype=np.float32)
    y = (np.asarray(bunch.target) == 0).astype(np.int64)
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    params: dict[str, str | int | float] = {
        "loader": "sklearn.datasets.load_breast_cancer",
        "sklearn": sklearn.__version__,
        "positive": "malignant",
    }
    source = "sklearn.datasets.load_breast_cancer (bundled copy), 1 = malignant"
    return Dataset("breast_cancer", X, y, names, source, params)
