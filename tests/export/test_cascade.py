"""The cascade (issue 15, item 3): a cheap variant answers the confident rows, the full model
the rows inside a band chosen on the validation split.

A real XGBoost model with its ladder, published with :func:`publish_candidate`; its ONNX files
are scored again here with ONNX Runtime, as the server feeds them, to check the card's band,
escalated share and metrics independently of the export code that chose them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import xgboost as xgb
from numpy.typing import NDArray
from sklearn.datasets import make_classification
from sklearn.metrics import average_precision_score, f1_score

from export.cascade import (
    TOLERANCE,
    average_precision,
    break_even_share,
    cascade_scores,
    choose_band,
    choose_variant,
    relative_cost,
)
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import quiet
from export.repository import load_holdout
from server.columns import Codec
from server.modelcard import (
    BinaryMetrics,
    Column,
    DatasetInfo,
    ModelCard,
    Variant,
    card_problems,
    decode_card,
    encode_card,
    load_card,
)

BUDGET = 0.01
"""Seconds per cost measurement: the tests check the cascade, not speed."""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, Path, Rows]:
    """A 64-round XGBoost model on imbalanced data (10% positives, 3 000 rows a split) published
    with its ladder; the card as loaded from disk, its folder and the validation rows."""
    X, y = make_classification(
        n_samples=9_000,
        n_features=12,
        n_informative=8,
        weights=[0.9],
        flip_y=0.02,
        class_sep=0.8,
        random_state=0,
    )
    X = X.astype(np.float32)
    train, validation, test = (Rows(X[i::3], y[i::3].astype(np.int64)) for i in range(3))
    model = xgb.XGBClassifier(n_estimators=64, max_depth=4, learning_rate=0.3, n_jobs=1)
    model.fit(train.X, train.y)
    names = [f"f{j}" for j in range(X.shape[1])]
    candidate = Candidate(
        model=model,
        name="cascaded",
        framework="xgboost",
        recipe="test",
        description="a cascade test",
        columns=[Column(name=n) for n in names],
        reference=train,
        validation=validation,
        test=test,
        dataset=DatasetInfo(
            name="synthetic", rows_train=3000, rows_validation=3000, rows_test=3000
        ),
        fingerprint="test",
        native_input=lambda rows: pd.DataFrame(rows, columns=names),
    )
    models_dir = tmp_path_factory.mktemp("cascade") / "models"
    card = publish_candidate(
        candidate, models_dir, quiet("cascaded"), cost_budget_s=BUDGET, ladder=True
    )
    return card, models_dir / "cascaded" / str(card.version), validation


def _positive_scores(version_dir: Path, card: ModelCard, file: str, X: Any) -> Any:
    sess = ort.InferenceSession(str(version_dir / file), providers=["CPUExecutionProvider"])
    out = sess.run([card.outputs.probabilities], Codec(card.input).onnx_feeds(X))[0]
    return np.asarray(out, dtype=np.float64)[:, 1]


def _variant(card: ModelCard, name: str) -> Variant:
    return next(v for v in card.variants if v.name == name)


def test_the_card_records_the_cheapest_cascade(published: tuple[ModelCard, Path, Rows]) -> None:
    card, version_dir, validation = published
    cascade = card.cascade
    assert cascade is not None
    assert cascade.tolerance == TOLERANCE
    assert 0.0 < cascade.escalated_share < 0.5
    assert cascade.us_per_row_batch64 > 0
    # Of every variant's band on the validation rows (around the full model's threshold, cheaper
    # than the full model in trees), the cascade's is the one choose_variant keeps.
    assert isinstance(card.metrics, BinaryMetrics)
    full = _positive_scores(version_dir, card, "model.onnx", validation.X)
    full_trees = 64
    costs: dict[str, tuple[float, int]] = {}
    for v in card.variants:
        scores = _positive_scores(version_dir, card, v.onnx.file, validation.X)
        band = choose_band(
            validation.y,
            scores,
            full,
            card.metrics.threshold,
            max_share=break_even_share(v.trees, full_trees),
        )
        if band is not None:
            costs[v.name] = (relative_cost(v.trees, full_trees, band.escalated_share), v.trees)
    assert cascade.variant == choose_variant(costs)
    assert costs[cascade.variant][0] < 1.0
    # The band holds the full model's threshold: a row the variant keeps is on the side of that
    # threshold its variant score puts it.
    assert cascade.low <= card.metrics.threshold <= cascade.high
    assert cascade.metrics.threshold == card.metrics.threshold
    # Valid, round-trips through JSON, and is what the server's load check reads from disk.
    assert card_problems(card) == []
    assert decode_card(encode_card(card)) == card
    assert load_card(version_dir) == card


def test_the_band_keeps_the_full_models_metrics_on_validation(
    published: tuple[ModelCard, Path, Rows],
) -> None:
    card, version_dir, validation = published
    cascade = card.cascade
    assert cascade is not None and isinstance(card.metrics, BinaryMetrics)
    variant_file = _variant(card, cascade.variant).onnx.file
    variant = _positive_scores(version_dir, card, variant_file, validation.X)
    full = _positive_scores(version_dir, card, "model.onnx", validation.X)
    scores = cascade_scores(variant, full, cascade.low, cascade.high)
    threshold = card.metrics.threshold
    y = validation.y
    assert average_precision_score(y, scores) >= average_precision_score(y, full) - TOLERANCE
    assert f1_score(y, scores >= threshold) >= f1_score(y, full >= threshold) - TOLERANCE
    # The variant alone does not: the band is needed (else escalating nothing would do).
    assert average_precision_score(y, variant) < average_precision_score(y, full) - TOLERANCE


def test_the_test_figures_are_the_cascades_answers_on_the_holdout(
    published: tuple[ModelCard, Path, Rows],
) -> None:
    card, version_dir, _ = published
    cascade = card.cascade
    assert cascade is not None
    X, y = load_holdout(version_dir)
    variant = _positive_scores(version_dir, card, _variant(card, cascade.variant).onnx.file, X)
    full = _positive_scores(version_dir, card, "model.onnx", X)
    inside = (variant >= cascade.low) & (variant <= cascade.high)
    assert cascade.escalated_share == pytest.approx(float(np.mean(inside)))
    scores = np.where(inside, full, variant)
    assert cascade.metrics.pr_auc == pytest.approx(average_precision_score(y, scores), abs=1e-6)
    predicted = scores >= cascade.metrics.threshold
    assert cascade.metrics.f1 == pytest.approx(f1_score(y, predicted), abs=1e-6)
    assert sum(map(sum, cascade.metrics.confusion_matrix)) == len(y)


def test_a_cascade_on_an_unknown_variant_or_outside_0_1_is_refused(
    published: tuple[ModelCard, Path, Rows],
) -> None:
    card, _, _ = published
    assert card.cascade is not None
    unknown = msgspec.structs.replace(card.cascade, variant="k99")
    outside = msgspec.structs.replace(card.cascade, low=0.6, high=0.4)
    problems = card_problems(msgspec.structs.replace(card, cascade=unknown))
    assert any("'k99' is not among" in p for p in problems)
    problems = card_problems(msgspec.structs.replace(card, cascade=outside))
    assert any("is not within [0, 1]" in p for p in problems)


# --- the band search on its own --------------------------------------------------------------


def _scores(seed: int, n: int = 4_000) -> tuple[NDArray[np.int64], Any, Any]:
    """Labels, a full model's scores and a noisier variant's, both in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    logit = 2.5 * y + rng.normal(size=n) - 2.0
    full = 1 / (1 + np.exp(-logit))
    variant = 1 / (1 + np.exp(-(logit + rng.normal(scale=0.8, size=n))))
    return y, full, variant


def test_average_precision_is_scikit_learns() -> None:
    y, full, _ = _scores(1)
    assert average_precision(y, full) == pytest.approx(average_precision_score(y, full))
    coarse = np.round(full, 1)  # many ties
    assert average_precision(y, coarse) == pytest.approx(average_precision_score(y, coarse))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_band_holds_the_threshold_and_the_tolerance(seed: int) -> None:
    y, full, variant = _scores(seed)
    t_full = 0.45
    band = choose_band(y, variant, full, t_full, max_share=1.0)
    assert band is not None
    assert band.low <= t_full <= band.high
    scores = cascade_scores(variant, full, band.low, band.high)
    assert band.pr_auc == pytest.approx(average_precision_score(y, scores))
    assert band.pr_auc >= average_precision_score(y, full) - TOLERANCE
    assert band.f1 >= f1_score(y, full >= t_full) - TOLERANCE
    assert band.escalated_share == pytest.approx(
        float(np.mean((variant >= band.low) & (variant <= band.high)))
    )
    # A stricter tolerance never escalates fewer rows.
    stricter = choose_band(y, variant, full, t_full, tolerance=0.001, max_share=1.0)
    assert stricter is not None and stricter.escalated_share >= band.escalated_share


def test_no_band_when_the_tolerance_cannot_be_met() -> None:
    y, full, variant = _scores(0)
    # Gaining 0.1 PR-AUC over the full model is impossible, however many rows are escalated.
    assert choose_band(y, variant, full, 0.45, tolerance=-0.1, max_share=1.0) is None
    # Escalating at most 1% of the rows is not enough for this noisy variant.
    assert choose_band(y, variant, full, 0.45, max_share=0.01) is None


def test_a_variant_as_good_as_the_full_model_escalates_only_the_threshold() -> None:
    y, full, _ = _scores(0)
    band = choose_band(y, full, full, 0.4)
    assert band is not None
    assert (band.low, band.high) == (0.4, 0.4)
    assert band.escalated_share == pytest.approx(float(np.mean(full == 0.4)))


def test_list_variants_shows_the_cascade(
    published: tuple[ModelCard, Path, Rows], capsys: pytest.CaptureFixture[str]
) -> None:
    from export.cli import main

    card, version_dir, _ = published
    cascade = card.cascade
    assert cascade is not None
    capsys.readouterr()
    assert main(["list", "--models-dir", str(version_dir.parents[1]), "--variants"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out]
    assert [row[2] for row in rows[1:5]] == ["full", "k8", "k16", "k32"]
    used = f"{cascade.variant}+full"
    assert rows[5][2:6] == ["cascade", used, "PR-AUC", f"{cascade.metrics.pr_auc:.3f}"]
    assert out[-1].startswith(f"cascaded {card.version} cascade: {cascade.variant} answers")


def test_choose_variant_takes_the_largest_of_the_nearly_cheapest() -> None:
    costs = {"k8": (0.70, 8), "k16": (0.58, 16), "k32": (0.59, 32), "k48": (0.80, 48)}
    assert choose_variant(costs) == "k32"  # within 0.05 of k16's 0.58, and larger
    assert choose_variant({"k8": (0.5, 8), "k32": (0.6, 32)}) == "k8"
