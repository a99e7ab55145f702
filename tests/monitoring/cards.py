"""Model cards for monitoring tests, with reference statistics computed from given data.

The reference histograms come from ``export.reference.reference_stats`` (the exporter's own
code), so the tests also check that exporter and monitor bin values the same way.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from export.reference import reference_stats
from server.modelcard import (
    SCHEMA_VERSION,
    Cost,
    DatasetInfo,
    InputSpec,
    Metrics,
    ModelCard,
    OnnxInfo,
    OutputSpec,
    Parity,
)


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
    return ModelCard(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created_at="2026-11-26T00:00:00+00:00",
        framework="sklearn",
        estimator="tests.Fake",
        recipe="test",
        input=InputSpec(name="input", feature_names=feature_names),
        outputs=OutputSpec(probabilities="probabilities"),
        classes=[0, 1],
        positive_class=1,
        onnx=OnnxInfo(file="model.onnx", sha256="0" * 64, opset=17, size_bytes=1),
        dataset=DatasetInfo(
            name="test",
            rows_train=len(X),
            rows_validation=0,
            rows_test=0,
            positive_rate_train=float(np.mean(y)),
        ),
        metrics=Metrics(
            threshold=threshold,
            precision=0.5,
            recall=0.5,
            f1=0.5,
            roc_auc=0.5,
            pr_auc=0.5,
            log_loss=0.5,
            brier=0.1,
            accuracy=0.5,
            baseline_accuracy=0.5,
            confusion_matrix=[[1, 1], [1, 1]],
            positive_rate_test=0.5,
        ),
        parity=Parity(max_abs_diff=0.0, rows=1, tolerance=1e-5),
        cost=Cost(us_batch1=1.0, us_per_row_batch64=1.0, us_per_row_batch512=1.0),
        reference=reference_stats(X, y, scores, feature_names, threshold),
    )


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
