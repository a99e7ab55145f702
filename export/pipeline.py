"""From a fitted model to a published version: convert, check parity, evaluate, measure, publish.

Shared by the bundled build (:mod:`export.build`) and bring-your-own conversion
(:mod:`export.byo`). Metrics are computed from the ONNX model's scores, i.e. from what the server
will actually serve (parity guarantees they match the native model's within the tolerance).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.cost import measure_cost
from export.evaluate import f1_optimal_threshold, holdout_metrics
from export.onnx_export import (
    TOLERANCE,
    check_parity,
    estimator_name,
    handles_missing,
    onnx_proba,
    session,
    to_onnx,
)
from export.progress import Progress
from export.reference import reference_stats
from export.repository import publish
from server.errors import ExportError
from server.modelcard import (
    SCHEMA_VERSION,
    Column,
    DatasetInfo,
    InputSpec,
    ModelCard,
    OnnxInfo,
    OutputSpec,
    Parity,
)

Params = dict[str, str | int | float | bool | None]


@dataclass(frozen=True)
class Rows:
    X: NDArray[np.float32]
    y: NDArray[np.int64]


@dataclass(frozen=True)
class Candidate:
    """A fitted model and everything needed to evaluate and publish it."""

    model: Any
    name: str
    framework: str
    recipe: str
    description: str
    feature_names: list[str]
    reference: Rows
    """Rows the drift reference is computed from (the training split when there is one)."""
    validation: Rows
    """Rows the decision threshold is chosen on."""
    test: Rows
    """Rows the metrics and parity are computed on; also saved as holdout.npz."""
    dataset: DatasetInfo
    fingerprint: str
    params: Params = field(default_factory=dict)
    cv_scores: list[float] | None = None
    threshold_rule: str = "f1-optimal on validation"


def publish_candidate(
    candidate: Candidate,
    models_dir: Path,
    progress: Progress,
    *,
    seed: int = 0,
    cost_budget_s: float = 0.4,
    threads: int = 1,
    before_rename: Callable[[Path], None] | None = None,
) -> ModelCard:
    """Convert, verify, evaluate and publish ``candidate``; return the published card.

    Parity and evaluation score with ``threads`` ONNX Runtime threads; the cost measurement
    always with one, as the server runs by default.
    """
    c = candidate
    classes = [int(k) for k in getattr(c.model, "classes_", [0, 1])]
    if classes != [0, 1]:
        raise ExportError(f"{c.name}: only binary 0/1 classifiers are supported, classes {classes}")
    n_features = len(c.feature_names)
    with progress.step("converting to ONNX and checking parity"):
        exported = to_onnx(c.model, n_features, c.framework)
        sess = session(exported.onnx_bytes, threads)
        diff = check_parity(c.model, exported, c.test.X, c.name, sess)
        allow_missing = handles_missing(c.model, exported, c.test.X, seed, sess)
    with progress.step("evaluating"):

        def scores(X: NDArray[np.float32]) -> NDArray[np.float64]:
            return np.asarray(onnx_proba(sess, exported, X)[:, 1], dtype=np.float64)

        threshold = f1_optimal_threshold(c.validation.y, scores(c.validation.X))
        metrics = holdout_metrics(
            c.test.y, scores(c.test.X), threshold, c.cv_scores, threshold_rule=c.threshold_rule
        )
        reference = reference_stats(
            c.reference.X, c.reference.y, scores(c.reference.X), c.feature_names, threshold
        )
    with progress.step("measuring ONNX Runtime cost"):
        cost = measure_cost(exported, c.test.X, budget_s=cost_budget_s)

    sha = hashlib.sha256(exported.onnx_bytes).hexdigest()
    created = datetime.now(UTC).isoformat(timespec="seconds")

    def card_for_version(version: int) -> ModelCard:
        return ModelCard(
            schema_version=SCHEMA_VERSION,
            name=c.name,
            version=version,
            created_at=created,
            framework=c.framework,
            estimator=estimator_name(c.model),
            recipe=c.recipe,
            task="binary",
            input=InputSpec(
                name=exported.input_name,
                columns=[Column(name=n, allow_missing=allow_missing) for n in c.feature_names],
            ),
            outputs=OutputSpec(probabilities=exported.proba_output, label=exported.label_output),
            classes=list(classes),
            positive_class=1,
            onnx=OnnxInfo(
                file="model.onnx",
                sha256=sha,
                opset=exported.opset,
                size_bytes=len(exported.onnx_bytes),
            ),
            dataset=c.dataset,
            metrics=metrics,
            parity=Parity(max_abs_diff=diff, rows=len(c.test.X), tolerance=TOLERANCE),
            cost=cost,
            reference=reference,
            fingerprint=c.fingerprint,
            params=c.params,
            description=c.description,
        )

    version_dir = publish(
        models_dir,
        c.name,
        card_for_version,
        exported.onnx_bytes,
        holdout=(c.test.X, c.test.y),
        before_rename=before_rename,
    )
    card = card_for_version(int(version_dir.name))
    progress.say(
        f"published version {card.version}: PR-AUC {metrics.pr_auc:.3f}, F1 {metrics.f1:.3f}, "
        f"parity {diff:.1e}, {cost.us_per_row_batch64:.2f} µs/row at batch 64"
    )
    return card
