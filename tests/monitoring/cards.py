"""Model cards for monitoring tests, with reference statistics computed from given data.

The reference histograms come from ``export.reference.reference_stats`` (the exporter's own
code), so the tests also check that exporter and monitor bin values the same way.
"""

from __future__ import annotations

import msgspec
import numpy as np
from numpy.typing import NDArray

from export.reference import reference_stats
from server.modelcard import Column, ModelCard, placeholder_card


def card_from_data(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    scores: NDArray[np.float64],
    feature_names: list[str],
    *,
    threshold: float = 0.5,
    name: str = "fraud",
    version: int = 1,
) -> ModelCard:
    """A valid card whose reference is ``X``'s quantile histograms and ``scores``' histogram."""
    card = placeholder_card(
        name,
        version,
        feature_names=feature_names,
        threshold=threshold,
        reference=reference_stats(
            [Column(name=n) for n in feature_names], X, y, scores, "binary", [0, 1], threshold
        ),
    )
    dataset = msgspec.structs.replace(
        card.dataset, rows_train=len(X), positive_rate_train=float(np.mean(y))
    )
    return msgspec.structs.replace(card, dataset=dataset)


def class_scores(positive: NDArray[np.floating]) -> NDArray[np.float32]:
    """[n, 2] class probabilities from positive-class scores."""
    p = np.asarray(positive, dtype=np.float32)
    return np.column_stack([1.0 - p, p]).astype(np.float32)


def fake_fraud_scores(X: NDArray[np.float32], feature_names: list[str]) -> NDArray[np.float64]:
    """A stand-in model: a logistic score of three of the fraud features (two of them shifted)."""
    col = {name: X[:, j].astype(np.float64) for j, name in enumerate(feature_names)}
    z = (
        -4.0
        + 6.0 * col["merchant_risk_score"]
        + 0.5 * np.log1p(col["distance_from_home_km"])
        + 3.0 * col["ip_risk_score"]
    )
    return 1.0 / (1.0 + np.exp(-z))
