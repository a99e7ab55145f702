"""Serving a model's ladder (issue 15): degrade instead of refuse, and the cascade.

A card's ``variants`` are cheaper versions of its model (the first K trees), exported, checked
and measured like it (``export/ladder.py``). Two ways to serve them, each off by default:

- **Degrade** (``TABSERVE_DEGRADE_OBJECTIVE_MS``, per model): every variant gets its own batcher
  beside the model's. A request carries a budget (``X-Latency-Budget-Ms``, else the model's
  objective), which is also its deadline. When the model's queue would answer it later than the
  budget (queued rows at the measured drain rate, :meth:`Batcher.wait_s`), it runs on the most
  accurate variant whose queue answers in time, and on the cheapest when none does (then the
  usual 503 and 504 refuse what cannot make it). The answer names what answered
  (``X-Model-Variant``) and is labelled at that variant's own threshold.
- **Cascade** (``TABSERVE_CASCADE_MODELS``): the model's batcher runs :class:`CascadeRunner`:
  the card's cascade variant scores every row, and rows whose positive-class score falls inside
  the card's band (chosen at export on the validation split) are scored again by the full model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from server.batcher import Batcher, CacheMode
from server.errors import Overloaded
from server.metrics import CounterChild
from server.modelcard import (
    BinaryMetrics,
    Cascade,
    Metrics,
    ModelCard,
    MulticlassMetrics,
    Variant,
)
from server.runner import Runner

FULL = "full"
"""The name a ladder gives the model itself."""
CASCADE = "cascade"
"""What ``X-Model-Variant`` says for a model served through its cascade."""


def quality(metrics: Metrics) -> float:
    """Higher is better: PR-AUC (binary), macro PR-AUC (multiclass), -RMSE (regression)."""
    if isinstance(metrics, BinaryMetrics):
        return metrics.pr_auc
    if isinstance(metrics, MulticlassMetrics):
        return metrics.macro_pr_auc
    return -metrics.rmse


def variant_card(card: ModelCard, variant: Variant) -> ModelCard:
    """The card a variant's answers and monitoring use: the model's, with the variant's ONNX
    file, threshold, metrics and cost."""
    return msgspec.structs.replace(
        card,
        onnx=variant.onnx,
        metrics=variant.metrics,
        parity=variant.parity,
        cost=variant.cost,
        variants=[],
        cascade=None,
    )


@dataclass(frozen=True, eq=False)
class Rung:
    """The model or one of its variants, with the batcher that serves it."""

    name: str
    card: ModelCard
    batcher: Batcher
    header: bytes
    """``X-Model-Variant``'s value."""
    rows: CounterChild
    """``tabserve_variant_rows_total`` of this rung."""


class Ladder:
    """The rungs of one model version for degrade: the model first, then its variants, most
    accurate first (hold-out metric, then more trees)."""

    def __init__(self, rungs: Sequence[Rung], objective_ms: float) -> None:
        self.rungs = tuple(rungs)
        self.objective_ms = objective_ms

    @property
    def variants(self) -> tuple[Rung, ...]:
        return self.rungs[1:]

    def pick(self, n: int, budget_at: float, now: float) -> Rung:
        """The first rung whose queue answers ``n`` more rows by ``budget_at``, else the
        cheapest."""
        for rung in self.rungs:
            if now + rung.batcher.wait_s(n) <= budget_at:
                return rung
        return self.rungs[-1]

    def fallbacks(self, rung: Rung) -> tuple[Rung, ...]:
        """The rungs after ``rung``: where a request goes when ``rung``'s queue refuses it."""
        return self.rungs[self.rungs.index(rung) + 1 :]

    async def predict(
        self,
        rung: Rung,
        rows: np.ndarray,
        deadline: float,
        request_id: str,
        cache_mode: CacheMode,
    ) -> tuple[Rung, np.ndarray]:
        """Scores from ``rung``, or from the next cheaper one whose queue takes the rows when
        ``rung``'s is full (Overloaded from the last one refuses the request)."""
        tried = (rung, *self.fallbacks(rung))
        for i, step in enumerate(tried):
            try:
                scores = await step.batcher.predict(
                    rows,
                    deadline=deadline,
                    request_id=request_id,
                    cache_mode=cache_mode,
                )
            except Overloaded:
                if i == len(tried) - 1:
                    raise
                continue
            step.rows.inc(len(rows))
            return step, scores
        raise AssertionError("unreachable")  # pragma: no cover


def order(card: ModelCard) -> list[Variant]:
    """The card's variants, most accurate first."""
    return sorted(card.variants, key=lambda v: (quality(v.metrics), v.trees), reverse=True)


class CascadeRunner:
    """Runs a binary model through its cascade, as the batcher runs a :class:`Runner`: the
    variant scores every row; rows inside ``[low, high]`` are scored again by the full model.

    ``cost_us`` is the variant's batch-1 cost plus the full model's times the hold-out share of
    escalated rows; runs are inline only when both runners are."""

    def __init__(
        self,
        variant: Runner,
        full: Runner,
        cascade: Cascade,
        *,
        kept: CounterChild,
        escalated: CounterChild,
    ) -> None:
        self.card = full.card
        self.label = full.label
        self.variant = variant
        self.full = full
        self.low = np.float32(cascade.low)
        self.high = np.float32(cascade.high)
        self.column = full.card.positive_index
        self.n_features = full.n_features
        self.n_classes = full.n_classes
        self.cost_us = variant.cost_us + cascade.escalated_share * full.cost_us
        self.inline = variant.inline and full.inline
        self._kept = kept
        self._escalated = escalated

    async def infer(self, rows: np.ndarray) -> np.ndarray:
        scores = await self.variant.infer(rows)
        p = scores[:, self.column]
        unsure = (p >= self.low) & (p <= self.high)
        k = int(np.count_nonzero(unsure))
        if k:
            if not scores.flags.writeable:
                scores = scores.copy()
            scores[unsure] = await self.full.infer(np.ascontiguousarray(rows[unsure]))
            self._escalated.inc(k)
        if k < len(rows):
            self._kept.inc(len(rows) - k)
        return scores

    def close(self) -> None:
        self.variant.close()
        self.full.close()
