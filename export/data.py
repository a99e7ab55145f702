"""Data sets: synthetic fraud and e-commerce generators, and scikit-learn's breast cancer data.

The fraud generator draws independent "root" features, derives the rest from them, and labels
rows with a non-linear logit plus label noise (about 2.5% positives). Besides simple risk
factors, the logit holds fraud patterns that are high-order interactions (account takeover, card
testing, money mules: three or four features each, with soft thresholds) and smooth oscillating
functions of feature pairs: structure that a large tree ensemble learns and a small one cannot
(issue 15: a ladder of cheaper variants needs a model whose extra cost buys accuracy).
``shift`` moves the distributions of exactly the features in :data:`SHIFTED_FEATURES`; no other
feature is computed from them, so shifted traffic drifts on those features and no others (the
label rate moves too, because the labels depend on them).

The e-commerce generators have typed columns (string categories, numbers, booleans) and the two
other tasks: :func:`pricing_dataset` (weekly demand of a listing at a price, a regression with 3
string and 20 numeric columns) and :func:`returns_dataset` (the reason a customer gives for a
return, 5 string classes). Their ``shift`` moves category shares and a few numbers (see
:data:`PRICING_SHIFTED`, :data:`RETURNS_SHIFTED`).

Every data set's ``X`` is the *row matrix* the server uses (``server.columns``): float32, one
column per input column, a categorical value as its index in the column's ``categories``.
:meth:`Dataset.records` gives the raw values (the strings) back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.columns import Codec
from server.modelcard import Column, InputSpec, Label, Task

FloatArray = NDArray[np.float32]
LabelArray = NDArray[np.int64]

GENERATOR_VERSION = 2
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
_INTERCEPT = -8.98
_STRENGTH = 2.0
_NOISE = 0.5


@dataclass(frozen=True)
class Dataset:
    """A labelled data set: the float32 row matrix, targets, typed columns and provenance."""

    name: str
    X: FloatArray
    """The row matrix: [n_rows, n_columns], categorical values as their category's index."""
    y: NDArray[Any]
    """Classifiers: int64 index into ``classes``; regression: the float64 target."""
    feature_names: list[str]
    source: str
    params: dict[str, str | int | float]
    """What determines the data (generator parameters or package version), for fingerprints."""
    columns: tuple[Column, ...] = ()
    """The typed input columns; empty: every column is numeric (see :attr:`input_columns`)."""
    task: Task = "binary"
    classes: tuple[Label, ...] = (0, 1)
    """Class labels, in the order ``y`` indexes them; empty for a regression."""
    positive_class: Label | None = 1
    target: str = "label"
    """What ``y`` is (the label column's name in a CSV of the data)."""

    @property
    def input_columns(self) -> list[Column]:
        """The typed input columns, in the row matrix's order."""
        if self.columns:
            return list(self.columns)
        return [Column(name=name) for name in self.feature_names]

    def records(self, rows: slice | NDArray[np.intp] = slice(None)) -> list[dict[str, Any]]:
        """The chosen rows as raw values (strings for categories), one dict per row."""
        codec = Codec(InputSpec(columns=self.input_columns))
        X = self.X[rows]
        values = [codec.decode_column(j, X[:, j]).tolist() for j in range(X.shape[1])]
        return [
            dict(zip(self.feature_names, row, strict=True)) for row in zip(*values, strict=True)
        ]


def make_fraud(
    n_rows: int = 100_000, seed: int = 0, shift: float = 0.0, concept: float = 0.0
) -> tuple[FloatArray, LabelArray, list[str]]:
    """Generate ``n_rows`` fraud-style transactions; deterministic for a given seed and shift.

    ``shift`` (0 = training distribution; 1 = a strong drift) moves :data:`SHIFTED_FEATURES`:
    transactions happen farther from home, at riskier merchants, from younger accounts, in
    faster bursts.

    ``concept`` (0 = the patterns the models were trained on; 1 = fraudsters have adapted) moves
    the labels, not the features: the risky-merchant-and-IP and account-takeover patterns fade
    and a new one grows, which a model trained at 0 has never seen as risky (see
    :func:`_adapted`). The features are the same for every ``concept`` (it draws nothing), so
    only labelled rows show it: what a retrained model can learn and a drift monitor cannot see.
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
    signal += _patterns(
        amount=amount,
        ratio=ratio,
        hour=hour,
        seconds_since=seconds_since,
        txn_7d=txn_7d,
        merchants_24h=merchants_24h,
        amount_sum_24h=amount_sum_24h,
        customer_avg=customer_avg,
        distance=distance,
        merchant_risk=merchant_risk,
        email_risk=email_risk,
        account_age=account_age,
        device_age=device_age,
        pw_change=pw_change,
        failed_logins=failed_logins,
        utilization=utilization,
        session=session,
        card_present=card_present,
    )
    if concept:
        signal += concept * _adapted(
            ratio=ratio,
            merchant_risk=merchant_risk,
            ip_risk=ip_risk,
            account_age=account_age,
            device_age=device_age,
            pw_change=pw_change,
            failed_logins=failed_logins,
            email_risk=email_risk,
            session=session,
            card_present=card_present,
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


def _soft(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """A soft threshold (the logistic function)."""
    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


def _takeover(
    device_age: NDArray[np.float64],
    pw_change: NDArray[np.float64],
    failed_logins: NDArray[Any],
    ratio: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The account-takeover pattern: a new device, a recent password change, failed logins, an
    unusual amount (soft conditions multiplied)."""
    out: NDArray[np.float64] = (
        _soft((2.5 - np.log1p(device_age)) * 3.0)
        * _soft((3.0 - np.log1p(pw_change)) * 3.0)
        * (0.5 + np.minimum(failed_logins, 2))
        * np.log1p(ratio)
    )
    return out


def _patterns(
    *,
    amount: NDArray[np.float64],
    ratio: NDArray[np.float64],
    hour: NDArray[np.float64],
    seconds_since: NDArray[np.float64],
    txn_7d: NDArray[Any],
    merchants_24h: NDArray[Any],
    amount_sum_24h: NDArray[np.float64],
    customer_avg: NDArray[np.float64],
    distance: NDArray[np.float64],
    merchant_risk: NDArray[np.float64],
    email_risk: NDArray[np.float64],
    account_age: NDArray[np.float64],
    device_age: NDArray[np.float64],
    pw_change: NDArray[np.float64],
    failed_logins: NDArray[Any],
    utilization: NDArray[np.float64],
    session: NDArray[np.float64],
    card_present: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The fraud patterns that need many trees: each a product of three or four soft conditions,
    or a smooth oscillating function of a feature pair (version 2 of the generator)."""
    # Account takeover: a new device, a recent password change, failed logins, an unusual amount.
    takeover = _takeover(device_age, pw_change, failed_logins, ratio)
    # Card testing: many merchants today, small amounts, in quick succession.
    card_testing = (
        _soft((merchants_24h - 3.5) * 2.0)
        * _soft((3.0 - np.log1p(amount)) * 3.0)
        * _soft((6.5 - np.log1p(seconds_since)) * 2.0)
    )
    # Money mule: a young account moving many times its usual amount, credit nearly used up.
    mule = (
        _soft((4.0 - np.log1p(account_age)) * 2.0)
        * _soft(amount_sum_24h / np.maximum(customer_avg, 1.0) - 4.0)
        * _soft((utilization - 0.6) * 10.0)
    )
    # Smooth interactions: session length by time of day (card-not-present weighs double),
    # distance by time of day shifted by the e-mail domain's risk, weekly velocity by merchant.
    session_hour = (
        np.sin(2.5 * np.log(session))
        * np.cos(2.0 * np.pi * hour / 24.0)
        * (1.0 - 0.5 * card_present)
    )
    distance_hour = np.tanh(np.log1p(distance) - 4.0) * np.sin(
        np.pi * hour / 12.0 + 3.0 * email_risk
    )
    velocity = np.cos(1.5 * np.log1p(txn_7d)) * np.sin(12.0 * merchant_risk)
    out: NDArray[np.float64] = (
        3.0 * takeover
        + 3.0 * card_testing
        + 3.0 * mule
        + 1.2 * session_hour
        + 1.0 * distance_hour
        + 0.8 * velocity
    )
    return out


def _adapted(
    *,
    ratio: NDArray[np.float64],
    merchant_risk: NDArray[np.float64],
    ip_risk: NDArray[np.float64],
    account_age: NDArray[np.float64],
    device_age: NDArray[np.float64],
    pw_change: NDArray[np.float64],
    failed_logins: NDArray[Any],
    email_risk: NDArray[np.float64],
    session: NDArray[np.float64],
    card_present: NDArray[np.float64],
) -> NDArray[np.float64]:
    """How the logit changes when fraudsters adapt (``concept`` = 1): the merchant-and-IP risk
    pattern and account takeover fade (scores flag them; fraudsters moved on), and aged,
    "clean-looking" accounts with an established device start buying at a few times their usual
    amount in short sessions, card not present: the pattern a model trained before has learnt
    to call safe."""
    takeover = _takeover(device_age, pw_change, failed_logins, ratio)
    faded = -0.8 * (4.0 * merchant_risk * ip_risk * 6.0) - 2.4 * takeover
    clean = (
        _soft((np.log1p(account_age) - 6.0) * 3.0)
        * _soft((np.log1p(device_age) - 4.5) * 3.0)
        * _soft((ratio - 2.0) * 3.0)
        * _soft((5.0 - np.log(session)) * 3.0)
        * _soft((0.25 - email_risk) * 15.0)
        * (1.0 - card_present)
    )
    out: NDArray[np.float64] = faded + 9.0 * clean
    return out


def fraud_dataset(
    n_rows: int = 100_000, seed: int = 0, shift: float = 0.0, concept: float = 0.0
) -> Dataset:
    """:func:`make_fraud` wrapped as a :class:`Dataset`."""
    X, y, names = make_fraud(n_rows, seed, shift, concept)
    params: dict[str, str | int | float] = {
        "generator": "export.data.make_fraud",
        "generator_version": GENERATOR_VERSION,
        "n_rows": n_rows,
        "seed": seed,
        "shift": shift,
    }
    source = f"synthetic: export.data.make_fraud(n_rows={n_rows}, seed={seed}, shift={shift})"
    if concept:  # (absent at 0: the bundled models' fingerprints stay what they were)
        params["concept"] = concept
        source = source[:-1] + f", concept={concept})"
    return Dataset("fraud", X, y, names, source, params, target="is_fraud")


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
    return Dataset("breast_cancer", X, y, names, source, params, target="malignant")


# --- E-commerce data with typed columns --------------------------------------------------------


def _categorical(name: str, categories: tuple[str, ...]) -> Column:
    return Column(name=name, kind="categorical", categories=list(categories))


def _shares(base: tuple[float, ...], tilt: tuple[float, ...], shift: float) -> NDArray[np.float64]:
    """Category shares at ``shift``: ``base`` tilted (log-linearly) by ``tilt`` times ``shift``."""
    weights = np.asarray(base, dtype=np.float64) * np.exp(shift * np.asarray(tilt))
    shares: NDArray[np.float64] = weights / weights.sum()
    return shares


def _draw(
    rng: np.random.Generator, n: int, base: tuple[float, ...], tilt: tuple[float, ...], shift: float
) -> NDArray[np.intp]:
    """``n`` category codes drawn with the shares of :func:`_shares`."""
    return rng.choice(len(base), size=n, p=_shares(base, tilt, shift))


PRICING_CATEGORIES: tuple[str, ...] = (
    "beauty",
    "books",
    "electronics",
    "fashion",
    "grocery",
    "home_garden",
    "sports_outdoors",
    "toys_games",
)
PRICING_CHANNELS: tuple[str, ...] = ("marketplace", "mobile_app", "social_commerce", "web")
PRICING_REGIONS: tuple[str, ...] = (
    "asia_pacific",
    "europe",
    "latin_america",
    "middle_east_africa",
    "north_america",
)
PRICING_NUMERIC: tuple[str, ...] = (
    "list_price",
    "discount_pct",
    "competitor_price_ratio",
    "price_change_7d_pct",
    "week_of_year",
    "days_to_holiday",
    "marketing_spend_k",
    "ad_impressions_k",
    "page_views_7d",
    "add_to_cart_rate",
    "avg_rating",
    "review_count",
    "stock_on_hand",
    "days_since_launch",
    "shipping_days",
    "shipping_fee",
    "return_rate_90d",
    "units_sold_prev_week",
    "search_rank",
    "competitor_count",
)
PRICING_COLUMNS: tuple[Column, ...] = (
    _categorical("category", PRICING_CATEGORIES),
    _categorical("channel", PRICING_CHANNELS),
    _categorical("region", PRICING_REGIONS),
    *(Column(name=n) for n in PRICING_NUMERIC),
)
"""The input columns of :func:`pricing_dataset`: 3 string categories, then 20 numbers."""
PRICING_SHIFTED: tuple[str, ...] = (
    "category",
    "channel",
    "discount_pct",
    "competitor_price_ratio",
)
"""The columns whose distributions ``shift`` moves in :func:`pricing_dataset` (others that are
derived from them move too: a category's prices, a discount's page views)."""

# Per category, in the order of PRICING_CATEGORIES.
_P_SHARE = (0.10, 0.08, 0.14, 0.20, 0.09, 0.16, 0.11, 0.12)
_P_TILT = (0.0, -0.8, 1.0, -0.6, 0.0, 0.0, 0.2, 1.2)
_P_PRICE = (22.0, 14.0, 180.0, 45.0, 8.0, 60.0, 55.0, 30.0)
_P_BASE = (2.2, 1.6, 1.5, 2.3, 3.0, 1.8, 1.7, 1.9)
"""log of typical weekly units."""
_P_ELASTICITY = (-1.6, -0.9, -2.4, -1.8, -0.7, -1.3, -1.5, -1.9)
_P_PEAK_WEEK = (50.0, 36.0, 48.0, 14.0, 51.0, 18.0, 26.0, 50.0)
"""Week of the seasonal peak (sinusoidal, one cycle a year)."""
_P_SEASON = (0.25, 0.35, 0.55, 0.30, 0.15, 0.40, 0.45, 0.80)
# Per channel, in the order of PRICING_CHANNELS.
_C_SHARE = (0.25, 0.30, 0.10, 0.35)
_C_TILT = (0.5, 0.3, 1.5, -0.6)
_C_LEVEL = (0.10, 0.15, -0.25, 0.0)
_C_SENSITIVITY = (1.35, 1.1, 0.8, 1.0)
"""Multiplies the category's price elasticity: marketplace shoppers compare prices."""
# Per region, in the order of PRICING_REGIONS.
_R_SHARE = (0.22, 0.27, 0.10, 0.06, 0.35)
_R_LEVEL = (0.05, -0.05, -0.30, -0.40, 0.10)
_R_PRICE = (0.9, 1.05, 0.75, 0.85, 1.0)
_HOLIDAY_DAYS = (44, 130, 193, 329, 357)
"""Days of the year of the big sales days: Valentine's, Mother's Day, a summer sale, Black
Friday, Christmas."""


def _streams(seed: int) -> Callable[[], np.random.Generator]:
    """A fresh independent generator per call, spawned from ``seed`` (up to 32): one stream per
    column keeps a column's values when another column's draws change."""
    streams = iter(np.random.default_rng(seed).spawn(32))
    return lambda: next(streams)


def pricing_dataset(n_rows: int = 16_000, seed: int = 0, shift: float = 0.0) -> Dataset:
    """Weekly demand of product listings, for a dynamic pricing model (a regression).

    A row is one listing in one week, as a pricing engine sees it before choosing a price: its
    category, sales channel and region (strings), its price, discount and competitors' prices,
    the season, marketing, traffic, reviews, stock and delivery. The target ``units_sold`` is
    the week's units (a count). Demand is Poisson around a log-linear rate with a price
    elasticity that depends on the category and the channel, a yearly season per category, a
    holiday lift, diminishing returns on marketing, and a cap at the stock on hand.

    ``shift`` (0 = training distribution, 1 = a strong drift) moves :data:`PRICING_SHIFTED`: more
    electronics and toys, more social commerce and marketplace sales, deeper discounts, and
    competitors pricing lower.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    n = n_rows
    rng = _streams(seed)

    category = _draw(rng(), n, _P_SHARE, _P_TILT, shift)
    channel = _draw(rng(), n, _C_SHARE, _C_TILT, shift)
    region = rng().choice(len(_R_SHARE), size=n, p=np.asarray(_R_SHARE))
    # Latent: how much a listing sells at a typical price (drives traffic, reviews, last week).
    popularity = rng().normal(0.0, 0.6, size=n)

    price_level = np.asarray(_P_PRICE)[category] * np.asarray(_R_PRICE)[region]
    list_price = np.round(price_level * rng().lognormal(0.0, 0.45, size=n), 2)
    promo = rng().random(n) < 0.35 + 0.25 * shift
    discount = np.where(promo, rng().beta(2.0, 6.0 - 2.5 * min(shift, 1.0), size=n), 0.0)
    discount = np.round(np.minimum(discount, 0.6), 3)
    # Our price (after the discount) over the cheapest competitor's: above 1, we are dearer.
    competitor_ratio = rng().lognormal(0.05 + 0.25 * shift, 0.12, size=n) * (1.0 - discount)
    price_change = np.round(rng().normal(0.0, 0.06, size=n) - 0.5 * discount * promo, 3)
    week = rng().integers(1, 53, size=n)
    day = (week - 1) * 7 + rng().integers(0, 7, size=n)
    holidays = np.asarray(_HOLIDAY_DAYS)
    ahead = (holidays[None, :] - day[:, None]) % 364
    days_to_holiday = ahead.min(axis=1)
    marketing = rng().gamma(1.2, 2.5, size=n) * np.exp(0.3 * popularity)
    impressions = marketing * rng().lognormal(np.log(35.0), 0.3, size=n)
    page_views = rng().poisson(np.exp(4.0 + popularity + 0.15 * np.log1p(impressions)))
    page_views = page_views * (1.0 + 1.5 * discount)
    cart_rate = rng().beta(2.0, 25.0, size=n) * np.exp(0.2 * popularity)
    rating = np.clip(rng().normal(4.1 + 0.15 * popularity, 0.45, size=n), 1.0, 5.0)
    launch_days = rng().gamma(1.5, 250.0, size=n)
    reviews = rng().poisson(np.exp(1.5 + 0.9 * popularity) * np.log1p(launch_days) * 2.0)
    stock = rng().poisson(np.exp(3.4 + 0.8 * popularity + 0.4 * rng().normal(size=n)))
    shipping_days = 1 + rng().poisson(2.0 + 1.5 * (region != 4), size=n)
    free_shipping = rng().random(n) < 0.55
    shipping_fee = np.where(free_shipping, 0.0, np.round(rng().gamma(2.0, 2.5, size=n), 2))
    return_rate = rng().beta(2.0, 18.0 - 8.0 * (category == 3), size=n)
    search_rank = 1 + rng().poisson(np.exp(2.5 - 0.7 * popularity), size=n)
    competitors = rng().poisson(3.0 + 4.0 * (category == 2) + 2.0 * (channel == 0), size=n)

    cat_base = np.asarray(_P_BASE)[category]
    season = np.asarray(_P_SEASON)[category] * np.cos(
        2.0 * np.pi * (week - np.asarray(_P_PEAK_WEEK)[category]) / 52.0
    )
    elasticity = np.asarray(_P_ELASTICITY)[category] * np.asarray(_C_SENSITIVITY)[channel]
    log_rate = (
        cat_base
        + np.asarray(_C_LEVEL)[channel]
        + np.asarray(_R_LEVEL)[region]
        + 0.8 * popularity
        + season
        + elasticity * np.log1p(-discount)
        + 0.5 * elasticity * np.log(competitor_ratio)
        - 0.4 * np.log(list_price / price_level)
        + 0.35 * np.exp(-days_to_holiday / 10.0) * (1.0 + (category == 7) + (category == 2))
        + 0.18 * np.log1p(marketing)
        + 0.6 * (rating - 4.0) * (reviews > 10)
        - 0.08 * (shipping_days - 3.0)
        - 0.04 * shipping_fee
        - 0.12 * np.log(search_rank)
        - 1.5 * (return_rate - 0.1)
    )
    # Last week: the same listing at last week's price (before this week's change).
    last_week = rng().poisson(
        np.exp(log_rate + elasticity * price_change + 0.25 * rng().normal(size=n))
    )
    units = rng().poisson(np.exp(log_rate + 0.2 * rng().normal(size=n)))
    # Sales stop at the stock on hand (plus what arrives during the week).
    units = np.minimum(units, stock + rng().poisson(2.0, size=n)).astype(np.float64)
    last_week = np.minimum(last_week, 2 * stock + 10)

    numeric: dict[str, NDArray[Any]] = {
        "list_price": list_price,
        "discount_pct": discount,
        "competitor_price_ratio": np.round(competitor_ratio, 3),
        "price_change_7d_pct": price_change,
        "week_of_year": week,
        "days_to_holiday": days_to_holiday,
        "marketing_spend_k": np.round(marketing, 2),
        "ad_impressions_k": np.round(impressions, 1),
        "page_views_7d": np.round(page_views),
        "add_to_cart_rate": np.round(cart_rate, 4),
        "avg_rating": np.round(rating, 1),
        "review_count": reviews,
        "stock_on_hand": stock,
        "days_since_launch": np.round(launch_days),
        "shipping_days": shipping_days,
        "shipping_fee": shipping_fee,
        "return_rate_90d": np.round(return_rate, 3),
        "units_sold_prev_week": last_week,
        "search_rank": search_rank,
        "competitor_count": competitors,
    }
    X = np.column_stack(
        [category, channel, region, *(numeric[name] for name in PRICING_NUMERIC)]
    ).astype(np.float32)
    params = _params("export.data.pricing_dataset", n_rows, seed, shift)
    return Dataset(
        "pricing",
        X,
        units,
        [c.name for c in PRICING_COLUMNS],
        _source("pricing_dataset", n_rows, seed, shift) + ", target units_sold (weekly)",
        params,
        columns=PRICING_COLUMNS,
        task="regression",
        classes=(),
        positive_class=None,
        target="units_sold",
    )


RETURN_REASONS: tuple[str, ...] = (
    "arrived_late",
    "changed_mind",
    "damaged",
    "not_as_described",
    "size",
)
"""The class labels of :func:`returns_dataset` (sorted, as scikit-learn orders string labels)."""
RETURNS_CATEGORIES: tuple[str, ...] = (
    "beauty",
    "electronics",
    "fashion",
    "home_garden",
    "shoes",
    "sports_outdoors",
    "toys_games",
)
RETURNS_CHANNELS: tuple[str, ...] = ("marketplace", "mobile_app", "web")
RETURNS_CARRIERS: tuple[str, ...] = ("dhl", "fedex", "local_courier", "ups", "usps")
RETURNS_NUMERIC: tuple[str, ...] = (
    "item_price",
    "discount_pct",
    "items_in_order",
    "delivery_days",
    "delivery_delay_days",
    "package_weight_kg",
    "product_rating",
    "product_return_rate",
    "listing_photos",
    "description_words",
    "customer_tenure_days",
    "customer_orders_12m",
    "customer_prior_returns",
    "days_to_return_request",
)
RETURNS_BOOLEAN: tuple[str, ...] = ("size_chart_viewed", "is_gift", "fragile")
RETURNS_COLUMNS: tuple[Column, ...] = (
    _categorical("category", RETURNS_CATEGORIES),
    _categorical("channel", RETURNS_CHANNELS),
    _categorical("carrier", RETURNS_CARRIERS),
    *(Column(name=n) for n in RETURNS_NUMERIC),
    *(Column(name=n, kind="boolean") for n in RETURNS_BOOLEAN),
)
"""The input columns of :func:`returns_dataset`: 3 string categories, 14 numbers, 3 booleans."""
RETURNS_SHIFTED: tuple[str, ...] = ("category", "carrier", "delivery_delay_days")
"""The columns whose distributions ``shift`` moves in :func:`returns_dataset`."""

_RC_SHARE = (0.10, 0.16, 0.28, 0.12, 0.14, 0.10, 0.10)
_RC_TILT = (0.0, 1.0, -0.7, 0.3, -0.5, 0.0, 1.0)
_RC_PRICE = (25.0, 220.0, 55.0, 70.0, 90.0, 60.0, 35.0)
_RC_APPAREL = (0.0, 0.0, 1.0, 0.0, 1.0, 0.3, 0.0)
"""How much size matters for a category."""
_RC_BREAKABLE = (0.5, 1.0, 0.1, 0.8, 0.1, 0.3, 0.6)
_RH_SHARE = (0.12, 0.45, 0.43)
_RK_SHARE = (0.20, 0.22, 0.10, 0.26, 0.22)
_RK_TILT = (0.0, 0.0, 1.6, 0.0, 0.4)
_RK_ROUGH = (0.2, 0.1, 0.9, 0.15, 0.45)
"""How roughly a carrier handles parcels (damage)."""
_RK_LATE = (0.3, 0.2, 0.8, 0.25, 0.6)
"""How often a carrier is late (mean extra days)."""


def returns_dataset(n_rows: int = 12_000, seed: int = 0, shift: float = 0.0) -> Dataset:
    """Returned order lines and the reason the customer gave (a 5-class classification).

    A row is one returned item as the returns desk sees it when the request arrives: the
    product's category, the sales channel and the carrier (strings), price and discount, the
    delivery (days, delay, weight, fragile), the listing (rating, return rate, photos,
    description), the customer (tenure, orders, prior returns) and the request. The label is
    one of :data:`RETURN_REASONS`, drawn from a softmax over per-reason scores with noise
    (customers do not always give the real reason): ``size`` for apparel and shoes (less after
    viewing the size chart, more when several items were ordered), ``damaged`` for fragile,
    heavy, roughly carried parcels, ``arrived_late`` with the delay, ``not_as_described`` for
    poorly rated, thinly described listings (more on the marketplace), ``changed_mind`` for
    expensive items, gifts and late requests.

    ``shift`` (0 = training distribution, 1 = a strong drift) moves :data:`RETURNS_SHIFTED`: more
    electronics and toys, more parcels with the local courier, longer delays (a peak season).
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    n = n_rows
    rng = _streams(seed)

    category = _draw(rng(), n, _RC_SHARE, _RC_TILT, shift)
    channel = rng().choice(len(_RH_SHARE), size=n, p=np.asarray(_RH_SHARE))
    carrier = _draw(rng(), n, _RK_SHARE, _RK_TILT, shift)
    apparel = np.asarray(_RC_APPAREL)[category]
    breakable = np.asarray(_RC_BREAKABLE)[category]

    price = np.round(np.asarray(_RC_PRICE)[category] * rng().lognormal(0.0, 0.6, size=n), 2)
    discount = np.round(np.where(rng().random(n) < 0.4, rng().beta(2.0, 5.0, size=n), 0.0), 3)
    items = 1 + rng().poisson(0.6 + 1.2 * apparel, size=n)
    delivery_days = 1 + rng().poisson(2.5, size=n)
    delay_mean = np.asarray(_RK_LATE)[carrier] * (1.0 + 2.0 * shift)
    delay = rng().poisson(delay_mean) * (rng().random(n) < 0.35 + 0.2 * shift)
    weight = np.round(rng().lognormal(np.log(0.4 + 2.0 * breakable), 0.7, size=n), 2)
    rating = np.round(np.clip(rng().normal(4.0, 0.6, size=n), 1.0, 5.0), 1)
    return_rate = np.round(rng().beta(2.0, 12.0 - 5.0 * apparel, size=n), 3)
    photos = 1 + rng().poisson(np.where(channel == 0, 2.5, 5.0))
    words = np.round(rng().lognormal(np.log(np.where(channel == 0, 60.0, 180.0)), 0.7))
    tenure = np.round(rng().gamma(1.3, 400.0, size=n))
    orders = rng().poisson(1.0 + tenure / 120.0)
    prior_returns = rng().binomial(orders, 0.12)
    request_days = 1 + np.round(rng().gamma(1.5, 5.0, size=n))
    size_chart = rng().random(n) < 0.15 + 0.45 * apparel
    gift = rng().random(n) < 0.08
    fragile = rng().random(n) < 0.7 * breakable

    log_tenure = np.log1p(tenure)
    scores = np.column_stack(
        [
            # arrived_late
            -0.9 + 1.1 * np.minimum(delay, 5) + 0.25 * (delivery_days - 3.5) - 0.05 * request_days,
            # changed_mind
            -0.8
            + 0.35 * np.log(price / 60.0)
            + 1.0 * gift
            + 0.06 * request_days
            + 0.4 * discount
            + 0.15 * np.minimum(prior_returns, 4),
            # damaged
            -1.7
            + 1.6 * fragile
            + 1.5 * np.asarray(_RK_ROUGH)[carrier] * breakable
            + 0.3 * np.log1p(weight)
            - 0.04 * request_days,
            # not_as_described
            -0.6
            - 0.9 * (rating - 4.0)
            - 0.15 * (photos - 4)
            - 0.35 * np.log(words / 120.0)
            + 0.6 * (channel == 0),
            # size
            -2.8
            + 3.6 * apparel
            - 1.1 * size_chart * apparel
            + 0.35 * np.minimum(items - 1, 3)
            - 0.12 * (log_tenure - 5.5)
            + 3.0 * return_rate,
        ]
    )
    noisy = scores + rng().gumbel(0.0, 0.9, size=scores.shape)
    reason = np.argmax(noisy, axis=1).astype(np.int64)

    numeric: dict[str, NDArray[Any]] = {
        "item_price": price,
        "discount_pct": discount,
        "items_in_order": items,
        "delivery_days": delivery_days,
        "delivery_delay_days": delay,
        "package_weight_kg": weight,
        "product_rating": rating,
        "product_return_rate": return_rate,
        "listing_photos": photos,
        "description_words": words,
        "customer_tenure_days": tenure,
        "customer_orders_12m": orders,
        "customer_prior_returns": prior_returns,
        "days_to_return_request": request_days,
    }
    flags: dict[str, NDArray[Any]] = {
        "size_chart_viewed": size_chart,
        "is_gift": gift,
        "fragile": fragile,
    }
    X = np.column_stack(
        [
            category,
            channel,
            carrier,
            *(numeric[name] for name in RETURNS_NUMERIC),
            *(flags[name] for name in RETURNS_BOOLEAN),
        ]
    ).astype(np.float32)
    return Dataset(
        "returns",
        X,
        reason,
        [c.name for c in RETURNS_COLUMNS],
        _source("returns_dataset", n_rows, seed, shift) + ", label return_reason",
        _params("export.data.returns_dataset", n_rows, seed, shift),
        columns=RETURNS_COLUMNS,
        task="multiclass",
        classes=RETURN_REASONS,
        positive_class=None,
        target="return_reason",
    )


def _params(generator: str, n_rows: int, seed: int, shift: float) -> dict[str, str | int | float]:
    return {
        "generator": generator,
        "generator_version": GENERATOR_VERSION,
        "n_rows": n_rows,
        "seed": seed,
        "shift": shift,
    }


def _source(generator: str, n_rows: int, seed: int, shift: float) -> str:
    return f"synthetic: export.data.{generator}(n_rows={n_rows}, seed={seed}, shift={shift})"
