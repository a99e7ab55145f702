"""From a fitted model to a published version: convert, check parity, evaluate, measure, publish.

Shared by the bundled build (:mod:`export.build`) and bring-your-own conversion
(:mod:`export.byo`). Every task goes through the same steps:

1. convert to ONNX for the candidate's input layout (:func:`export.onnx_export.to_onnx`);
2. parity on the test rows, fed to ONNX Runtime through :class:`server.columns.Codec` (as the
   server feeds it) and to the native model as raw values; then per column, whether it takes a
   missing value and what it does with an unseen category (absolute tolerance for
   probabilities, relative to the target's spread for a regressor);
3. metrics of the task on the test rows only, from the ONNX model's answers (what the server
   will serve; parity guarantees the native model's are the same within the tolerance); a
   binary threshold is chosen on the validation rows only;
4. the drift reference, the inference cost, and an atomic publish with ``holdout.npz``;
5. with ``ladder``, the same for each cheaper variant of a tree ensemble (its first K rounds or
   trees, :mod:`export.ladder`): ONNX parity against the native truncated model, its own
   threshold on the validation rows, metrics on the test rows and cost; each variant's ONNX
   file is published with the version and recorded in the card's ``variants``;
6. for a binary model with a ladder, its cascade (:mod:`export.cascade`): a variant answers the
   confident rows, the full model the rest; the variant and its band chosen on the validation
   rows, then its escalated share, metrics and cost on the test rows, recorded in the card's
   ``cascade``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from export import cascade as cascading
from export.cost import measure_cascade_cost, measure_cost
from export.evaluate import (
    f1_optimal_threshold,
    holdout_metrics,
    multiclass_metrics,
    recall_at,
    recall_matched_threshold,
    regression_metrics,
)
from export.ladder import Truncated, tree_count, variant_file
from export.ladder import ladder as truncated_variants
from export.onnx_export import (
    Exported,
    ParityResult,
    Scorer,
    check_parity_rows,
    estimator_name,
    session,
    to_onnx,
)
from export.progress import Progress
from export.reference import reference_stats
from export.repository import publish
from server.columns import UNSEEN, Codec
from server.errors import ExportError
from server.modelcard import (
    SCHEMA_VERSION,
    BinaryMetrics,
    Cascade,
    Column,
    DatasetInfo,
    InputSpec,
    Label,
    Metrics,
    ModelCard,
    MulticlassMetrics,
    OnnxInfo,
    OutputSpec,
    Parity,
    Reference,
    Task,
    Variant,
)

Params = dict[str, str | int | float | bool | None]
NativeInput = Callable[[NDArray[np.float32]], Any]


@dataclass(frozen=True)
class Rows:
    X: NDArray[np.float32]
    """The row matrix [n, n_columns] (``server.columns``): categorical columns hold codes."""
    y: NDArray[Any]
    """Classifiers: int64 class index into ``Candidate.classes``; regression: float64 target."""


@dataclass(frozen=True)
class Candidate:
    """A fitted model and everything needed to evaluate and publish it."""

    model: Any
    name: str
    framework: str
    recipe: str
    description: str
    columns: list[Column]
    """The input columns, in the row matrix's order. ``allow_missing`` and ``unknown`` are
    found by the parity probes (what the native model and ONNX both take)."""
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
    """Cross-validated PR-AUC (binary), macro-F1 (multiclass) or MAE (regression) per fold."""
    threshold_rule: str = "f1-optimal on validation"
    task: Task = "binary"
    classes: list[Label] = field(default_factory=lambda: [0, 1])
    """The user's labels in the order of the model's probability columns ([] for regression)."""
    positive_class: Label | None = 1
    layout: Literal["matrix", "columns"] = "matrix"
    native_input: NativeInput | None = None
    """Row matrix -> what the native model's predict/predict_proba takes (e.g. a pandas
    DataFrame with the raw strings); None: the matrix itself."""
    cause_if_parity_fails: str = ""
    """Appended to a parity failure's message (e.g. the categorical features a converter is
    known to get wrong)."""
    siblings: list[Truncated] = field(default_factory=list)
    """Cheaper models of the same framework, trained on the same split: with the ladder, they
    are published as variants too (after the truncated ones)."""

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]


def publish_candidate(
    candidate: Candidate,
    models_dir: Path,
    progress: Progress,
    *,
    seed: int = 0,
    cost_budget_s: float = 0.4,
    threads: int = 1,
    before_rename: Callable[[Path], None] | None = None,
    ladder: bool = False,
) -> ModelCard:
    """Convert, verify, evaluate and publish ``candidate``; return the published card.

    Parity and evaluation score with ``threads`` ONNX Runtime threads; the cost measurement
    always with one, as the server runs by default. With ``ladder``, a tree ensemble (XGBoost,
    a random forest) also gets its cheaper variants (:func:`export_variants`) and, when it is a
    binary classifier, its cascade (:func:`export_cascade`); other models get none.
    """
    c = candidate
    _check_candidate(c)
    spec = InputSpec(columns=list(c.columns), layout=c.layout)
    with progress.step("converting to ONNX and checking parity"):
        exported = to_onnx(c.model, spec, c.framework, c.task)
        if c.layout == "matrix":
            spec = InputSpec(columns=list(c.columns), layout="matrix", name=exported.input_name)
        sess = session(exported.onnx_bytes, threads)
        scorer = Scorer(c.model, exported, spec, c.task, sess, c.native_input)
        parity = check_parity_rows(
            scorer, c.test.X, c.test.y, c.name, seed, c.cause_if_parity_fails
        )
        spec = InputSpec(columns=parity.columns, layout=spec.layout, name=spec.name)
        _check_rows_servable(c, spec)
        scorer = Scorer(c.model, exported, spec, c.task, sess, c.native_input)
    with progress.step("evaluating"):
        metrics, threshold = _evaluate(c, scorer)
        reference = _reference(c, spec, scorer.onnx(c.reference.X), threshold)
    with progress.step("measuring ONNX Runtime cost"):
        codec = Codec(spec)
        cost = measure_cost(exported, c.test.X, budget_s=cost_budget_s, feeds=codec.onnx_feeds)
    variants: list[tuple[Variant, bytes]] = []
    cascade: Cascade | None = None
    if ladder:
        variants = export_variants(
            c,
            spec,
            progress,
            seed=seed,
            cost_budget_s=cost_budget_s,
            threads=threads,
            full_recall=_validation_recall(c, scorer, threshold),
        )
        if variants and c.task == "binary" and threshold is not None:
            cascade = export_cascade(
                c, scorer, threshold, variants, progress, cost_budget_s=cost_budget_s
            )

    sha = hashlib.sha256(exported.onnx_bytes).hexdigest()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    cards_variants = [v for v, _ in variants]

    def card_for_version(version: int) -> ModelCard:
        return _card(
            c,
            version,
            created,
            spec,
            exported,
            sha,
            metrics,
            parity,
            cost,
            reference,
            variants=cards_variants,
            cascade=cascade,
        )

    version_dir = publish(
        models_dir,
        c.name,
        card_for_version,
        exported.onnx_bytes,
        holdout=(c.test.X, c.test.y),
        before_rename=before_rename,
        extra_files={v.onnx.file: data for v, data in variants},
    )
    card = card_for_version(int(version_dir.name))
    progress.say(
        f"published version {card.version}: {_summary(metrics)}, "
        f"parity {parity.max_abs_diff:.1e}, {cost.us_per_row_batch64:.2f} µs/row at batch 64"
        + (f", {len(variants)} variants" if variants else "")
        + (f", cascade on {cascade.variant}" if cascade else "")
    )
    return card


VARIANT_COST_BUDGET_S = 0.08
"""Upper bound of the seconds spent on each of a variant's three cost measurements (medians
of many calls: enough to rank the variants, and keeps a ladder cheap to build)."""


def export_variants(
    c: Candidate,
    spec: InputSpec,
    progress: Progress,
    *,
    seed: int = 0,
    cost_budget_s: float = 0.4,
    threads: int = 1,
    full_recall: float | None = None,
) -> list[tuple[Variant, bytes]]:
    """The ladder of ``c``'s model (:mod:`export.ladder`), each variant exported and checked
    like the full model, with the input ``spec`` the full model's parity found; and each
    variant's ONNX bytes. [] when the model is no tree ensemble or too small to cut.

    A binary variant's threshold keeps the full model's recall on the validation split
    (``full_recall``; F1-optimal when None): a variant answers when the server degrades under
    load, and a fraud check that degrades should flag more transactions for review, not let more
    fraud through.

    Raise ParityError when a variant's ONNX answers differ from its native truncated model, and
    ExportError when a variant does not take every missing value or unknown category that the
    full model takes (found by the same parity probes as the full model's).
    """
    out: list[tuple[Variant, bytes]] = []
    budget = min(cost_budget_s, VARIANT_COST_BUDGET_S)
    for small in [*truncated_variants(c.model, c.framework), *c.siblings]:
        label = f"{c.name} variant {small.name}"
        with progress.step(f"variant {small.name} ({small.trees} of the trees): export"):
            exported = to_onnx(small.model, spec, c.framework, c.task)
            sess = session(exported.onnx_bytes, threads)
            scorer = Scorer(small.model, exported, spec, c.task, sess, c.native_input)
            parity = check_parity_rows(
                scorer, c.test.X, c.test.y, label, seed, c.cause_if_parity_fails
            )
            narrower = _narrower_columns(spec.columns, parity.columns)
            if narrower:
                raise ExportError(
                    f"{label}: does not take what the full model takes (a missing value or an "
                    f"unknown category) in column(s) {narrower}; not publishing"
                )
            metrics, _ = _evaluate(
                dataclasses.replace(c, model=small.model, cv_scores=None), scorer, full_recall
            )
            cost = measure_cost(exported, c.test.X, budget_s=budget, feeds=Codec(spec).onnx_feeds)
        variant = Variant(
            name=small.name,
            trees=small.trees,
            onnx=OnnxInfo(
                file=variant_file(small.name),
                sha256=hashlib.sha256(exported.onnx_bytes).hexdigest(),
                opset=exported.opset,
                size_bytes=len(exported.onnx_bytes),
            ),
            metrics=metrics,
            parity=Parity(
                max_abs_diff=parity.max_abs_diff,
                rows=len(c.test.X),
                tolerance=parity.tolerance,
                relative_to=parity.relative_to,
            ),
            cost=cost,
        )
        progress.say(
            f"variant {small.name}: {_summary(metrics)}, parity {parity.max_abs_diff:.1e}, "
            f"{cost.us_per_row_batch64:.2f} µs/row at batch 64, {cost.us_batch1:.1f} µs at batch 1"
        )
        out.append((variant, exported.onnx_bytes))
    return out


def export_cascade(
    c: Candidate,
    full: Scorer,
    threshold: float,
    variants: list[tuple[Variant, bytes]],
    progress: Progress,
    *,
    cost_budget_s: float = 0.4,
) -> Cascade | None:
    """The cheapest cascade of a variant in front of the full model (scored by ``full``, its
    decision ``threshold``). On the validation rows, each variant gets its band
    (:func:`export.cascade.choose_band`, escalating fewer rows than would make it cost as much
    as the full model), and the one with the lowest :func:`export.cascade.relative_cost` is
    kept; then, on the test rows, its escalated share, metrics at the full model's threshold,
    and cost per row at batch 64. None (and a line saying so) when no variant has a band."""
    full_trees = tree_count(c.model, c.framework)
    if not variants or full_trees is None:
        return None
    pos = _positive_index(c)
    codec = Codec(full.spec)
    sessions = {v.name: session(onnx_bytes) for v, onnx_bytes in variants}

    def variant_scores(v: Variant, X: NDArray[np.float32]) -> NDArray[np.float64]:
        out = sessions[v.name].run([full.exported.output], codec.onnx_feeds(X))[0]
        return np.asarray(out, dtype=np.float64).reshape(len(X), -1)[:, pos]

    def positives(y: NDArray[Any]) -> NDArray[np.int64]:
        flags: NDArray[np.int64] = (np.asarray(y) == pos).astype(np.int64)
        return flags

    found: dict[str, tuple[float, Variant, bytes, cascading.Band]] = {}
    tried: list[str] = []
    with progress.step("cascade: choosing each variant's band on validation"):
        y_val, full_val = positives(c.validation.y), full.onnx(c.validation.X)[:, pos]
        for v, onnx_bytes in variants:
            band = cascading.choose_band(
                y_val,
                variant_scores(v, c.validation.X),
                full_val,
                threshold,  # the cascade decides at the full model's threshold, not the variant's
                max_share=cascading.break_even_share(v.trees, full_trees),
            )
            if band is None:
                tried.append(f"{v.name} none cheaper than the full model")
                continue
            cost = cascading.relative_cost(v.trees, full_trees, band.escalated_share)
            tried.append(f"{v.name} escalates {band.escalated_share:.1%} ({cost:.2f} of the trees)")
            found[v.name] = (cost, v, onnx_bytes, band)
    progress.say("cascade bands on validation: " + ", ".join(tried))
    if not found:
        progress.say(
            f"no cascade: no variant's band keeps PR-AUC and F1 within {cascading.TOLERANCE} of "
            "the full model's on validation at less than the full model's cost"
        )
        return None
    chosen = cascading.choose_variant({name: (f[0], f[1].trees) for name, f in found.items()})
    _, variant, onnx_bytes, band = found[chosen]
    with progress.step(f"cascade on {variant.name}: evaluating and measuring on the test rows"):
        v_test = variant_scores(variant, c.test.X)
        scores = cascading.cascade_scores(v_test, full.onnx(c.test.X)[:, pos], band.low, band.high)
        share = float(np.mean(cascading.escalated(v_test, band.low, band.high)))
        metrics = holdout_metrics(
            positives(c.test.y),
            scores,
            threshold,
            threshold_rule=f"the full model's ({c.threshold_rule})",
        )
        us_per_row = measure_cascade_cost(
            onnx_bytes,
            full.exported.onnx_bytes,
            full.exported.output,
            pos,
            (band.low, band.high),
            c.test.X,
            codec.onnx_feeds,
            budget_s=cost_budget_s,
        )
    progress.say(
        f"cascade on {variant.name}: band [{band.low:.4f}, {band.high:.4f}] escalates "
        f"{share:.1%} of the test rows; {_summary(metrics)}; {us_per_row:.2f} µs/row at batch 64"
    )
    return Cascade(
        variant=variant.name,
        low=band.low,
        high=band.high,
        tolerance=cascading.TOLERANCE,
        escalated_share=share,
        metrics=metrics,
        us_per_row_batch64=us_per_row,
    )


def _positive_index(c: Candidate) -> int:
    return c.classes.index(c.positive_class) if c.positive_class in c.classes else 1


def _narrower_columns(full: list[Column], variant: list[Column]) -> list[str]:
    """Columns where the variant refuses (or answers unlike its native model) a missing value or
    an unknown category that the full model takes. The variant taking more is harmless: it is
    fed only rows that the full model's input spec lets through."""
    return [
        f.name
        for f, v in zip(full, variant, strict=True)
        if (f.allow_missing and not v.allow_missing)
        or (f.unknown == "serve" and v.unknown != "serve")
    ]


def _check_candidate(c: Candidate) -> None:
    if c.task == "regression":
        if c.classes or c.positive_class is not None:
            raise ExportError(f"{c.name}: a regressor has no classes and no positive class")
        return
    k = len(c.classes)
    if c.task == "binary" and (k != 2 or c.positive_class not in c.classes):
        raise ExportError(
            f"{c.name}: a binary classifier needs two classes and a positive class among them, "
            f"got classes {c.classes} and positive class {c.positive_class!r}"
        )
    if c.task == "multiclass" and (k < 3 or c.positive_class is not None):
        raise ExportError(f"{c.name}: a multiclass classifier has 3+ classes, got {c.classes}")
    for part, rows in (("reference", c.reference), ("validation", c.validation), ("test", c.test)):
        y = np.asarray(rows.y)
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ExportError(f"{c.name}: {part} labels must be class indices 0..{k - 1}")


def _check_rows_servable(c: Candidate, spec: InputSpec) -> None:
    """The hold-out rows are replayed against the server: each must be a row it takes."""
    for j, column in enumerate(spec.columns):
        cells = c.test.X[:, j]
        if not column.allow_missing and np.isnan(cells).any():
            raise ExportError(
                f"{c.name}: column {column.name!r} has missing values in the hold-out rows, but "
                "the model does not take a missing value there"
            )
        if column.kind == "categorical" and column.unknown == "refuse" and (cells == UNSEEN).any():
            raise ExportError(
                f"{c.name}: column {column.name!r} has values outside the model's categories in "
                "the hold-out rows, and the model refuses unknown categories"
            )


def _validation_recall(c: Candidate, scorer: Scorer, threshold: float | None) -> float | None:
    """The binary model's recall on the validation split at its ``threshold``."""
    if c.task != "binary" or threshold is None:
        return None
    pos = _positive_index(c)
    y = (np.asarray(c.validation.y) == pos).astype(np.int64)
    return recall_at(y, scorer.onnx(c.validation.X)[:, pos], threshold)


def _evaluate(
    c: Candidate, scorer: Scorer, match_recall: float | None = None
) -> tuple[Metrics, float | None]:
    """Hold-out metrics; a binary model's threshold is F1-optimal on validation, or the highest
    that reaches ``match_recall`` there."""
    if c.task == "binary":
        pos = _positive_index(c)

        def scores(X: NDArray[np.float32]) -> NDArray[np.float64]:
            return scorer.onnx(X)[:, pos]

        def positives(y: NDArray[Any]) -> NDArray[np.int64]:
            flags: NDArray[np.int64] = (np.asarray(y) == pos).astype(np.int64)
            return flags

        y_val, p_val = positives(c.validation.y), scores(c.validation.X)
        if match_recall is None:
            threshold, rule = f1_optimal_threshold(y_val, p_val), c.threshold_rule
        else:
            threshold = recall_matched_threshold(y_val, p_val, match_recall)
            rule = f"recall of the full model on validation ({match_recall:.3f})"
        metrics = holdout_metrics(
            positives(c.test.y),
            scores(c.test.X),
            threshold,
            c.cv_scores,
            threshold_rule=rule,
        )
        return metrics, threshold
    if c.task == "multiclass":
        proba = scorer.onnx(c.test.X)
        reference_y = np.asarray(c.reference.y, dtype=np.int64)
        y_test = np.asarray(c.test.y, dtype=np.int64)
        return multiclass_metrics(y_test, proba, reference_y, c.cv_scores), None
    predicted = scorer.onnx(c.test.X)[:, 0]
    return (
        regression_metrics(
            np.asarray(c.test.y, dtype=np.float64),
            predicted,
            np.asarray(c.reference.y, dtype=np.float64),
            c.cv_scores,
        ),
        None,
    )


def _summary(metrics: Metrics) -> str:
    if isinstance(metrics, BinaryMetrics):
        return f"PR-AUC {metrics.pr_auc:.3f}, F1 {metrics.f1:.3f}"
    if isinstance(metrics, MulticlassMetrics):
        return f"macro-F1 {metrics.macro_f1:.3f}, accuracy {metrics.accuracy:.3f}"
    return f"RMSE {metrics.rmse:.4g}, R² {metrics.r2:.3f}"


def _reference(
    c: Candidate, spec: InputSpec, outputs: NDArray[np.float64], threshold: float | None
) -> Reference:
    """The drift reference of the reference rows and the ONNX model's answers on them."""
    return reference_stats(
        spec.columns,
        c.reference.X,
        c.reference.y,
        outputs,
        c.task,
        list(c.classes),
        threshold,
        positive_class=c.positive_class if c.task == "binary" else None,
    )


def _card(
    c: Candidate,
    version: int,
    created: str,
    spec: InputSpec,
    exported: Exported,
    sha: str,
    metrics: Metrics,
    parity: ParityResult,
    cost: Any,
    reference: Reference,
    *,
    variants: list[Variant],
    cascade: Cascade | None = None,
) -> ModelCard:
    if c.task == "regression":
        outputs = OutputSpec(value=exported.value_output)
    else:
        outputs = OutputSpec(probabilities=exported.proba_output, label=exported.label_output)
    return ModelCard(
        schema_version=SCHEMA_VERSION,
        name=c.name,
        version=version,
        created_at=created,
        framework=c.framework,
        estimator=estimator_name(c.model),
        recipe=c.recipe,
        task=c.task,
        input=spec,
        outputs=outputs,
        classes=list(c.classes),
        positive_class=c.positive_class if c.task == "binary" else None,
        onnx=OnnxInfo(
            file="model.onnx",
            sha256=sha,
            opset=exported.opset,
            size_bytes=len(exported.onnx_bytes),
        ),
        dataset=c.dataset,
        metrics=metrics,
        parity=Parity(
            max_abs_diff=parity.max_abs_diff,
            rows=len(c.test.X),
            tolerance=parity.tolerance,
            relative_to=parity.relative_to,
        ),
        cost=cost,
        reference=reference,
        fingerprint=c.fingerprint,
        params=c.params,
        description=c.description,
        variants=list(variants),
        cascade=cascade,
    )
