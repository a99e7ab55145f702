"""Serving a model's ladder (issue 15): degrade instead of refuse, and the cascade.

A card's ``variants`` are cheaper versions of its model (the first K trees), exported, checked
and measured like it (``export/ladder.py``). Two ways to serve them, each off by default:

- **Degrade** (``TABSERVE_DEGRADE_OBJECTIVE_MS``, per model): every variant gets its own batcher
  beside the model's. A request carries a budget (``X-Latency-Budget-Ms``, else the model's
  objective), which is also its deadline. The ladder serves at one level at a time and steps
  down when the work queued on its rungs nears the objective, back up when it stays short
  (:class:`Ladder`); a request whose budget the level's rung would miss runs on the first cheaper
  rung that answers in time, and on the cheapest when none does (then the usual 503 and 504
  refuse what cannot make it). The answer names what answered
  (``X-Model-Variant``) and is labelled at that variant's own threshold.
- **Cascade** (``TABSERVE_CASCADE_MODELS``): the model's batcher runs :class:`CascadeRunner`:
  the card's cascade variant scores every row, and rows whose positive-class score falls inside
  the card's band (chosen at export on the validation split) are scored again by the full model.
"""

from __future__ import annotations

import math
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


STEP_DOWN_SHARE = 0.3
"""A degrading ladder steps to a cheaper rung when the work queued on all its rungs would take
more than this share of the objective to drain."""
STEP_UP_SHARE = 0.05
"""... and back up one rung once it has stayed under this share for :data:`STEP_UP_HOLD_S`."""
STEP_UP_HOLD_S = 0.5
STEP_DOWN_HOLD_S = 0.005
"""The least time between two steps down (each step's queue gets a moment to show its rate)."""


class Ladder:
    """The rungs of one model version for degrade: the model first, then its variants, most
    accurate first (hold-out metric, then more trees).

    The rungs share the worker's event loop and core, so the ladder serves traffic at one level
    at a time (model switching), chosen by the work queued on all rungs: past
    :data:`STEP_DOWN_SHARE` of the objective it steps to a cheaper rung, and it steps back up
    one rung after the queues stayed short for :data:`STEP_UP_HOLD_S`. Requests on two rungs at
    once would take turns on the core: a request on the model would wait not only for its own
    queue but for every variant request that arrives after it. A request whose budget the
    level's rung cannot meet (its queue at the measured drain rate, plus the other rungs'
    backlog) goes to the first cheaper rung that can, else the cheapest; one with a longer
    budget than the objective may go to any rung that meets it, the model first."""

    def __init__(self, rungs: Sequence[Rung], objective_ms: float) -> None:
        self.rungs = tuple(rungs)
        self.objective_ms = objective_ms
        self.level = 0
        """The rung that takes new requests (0: the model itself)."""
        self._down_at = self._calm_since = 0.0
        self._down_s = STEP_DOWN_SHARE * objective_ms / 1000.0
        self._up_s = STEP_UP_SHARE * objective_ms / 1000.0
        self._objective_s = objective_ms / 1000.0

    @property
    def variants(self) -> tuple[Rung, ...]:
        return self.rungs[1:]

    def pick(self, n: int, budget_at: float, now: float) -> Rung:
        """The rung for ``n`` more rows due by ``budget_at``: the ladder's level (see the class),
        or the first cheaper rung that answers them in time, else the cheapest (a budget longer
        than the objective: the first rung that answers in time)."""
        backlogs = [rung.batcher.backlog_s() for rung in self.rungs]
        total = sum(backlogs)
        self._steer(total, now)
        first = 0 if budget_at - now > self._objective_s else self.level
        for i in range(first, len(self.rungs)):
            rung = self.rungs[i]
            if now + rung.batcher.wait_s(n) + (total - backlogs[i]) <= budget_at:
                return rung
        return self.rungs[-1]

    def _steer(self, backlog_s: float, now: float) -> None:
        """Move the level from the work queued on all rungs (``backlog_s`` seconds)."""
        if backlog_s > self._down_s:
            self._calm_since = now
            if self.level < len(self.rungs) - 1 and now - self._down_at >= STEP_DOWN_HOLD_S:
                self.level += 1
                self._down_at = now
        elif backlog_s > self._up_s:
            self._calm_since = now
        elif self.level and now - self._calm_since >= STEP_UP_HOLD_S:
            self.level -= 1
            self._calm_since = now

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
    """The rungs below the model for degrade: the card's variants, most accurate first, each
    cheaper (µs per row at batch 64, measured at export) than every variant above it. A variant
    that is both less accurate and no cheaper than one above it is left off: stepping down to it
    would lose accuracy and gain no room (a small sibling model can beat the big model's
    truncations on both). Every variant counts as cheaper than the model itself (a truncation
    is; timing noise on a tiny model must not drop it)."""
    ranked = sorted(card.variants, key=lambda v: (quality(v.metrics), v.trees), reverse=True)
    rungs: list[Variant] = []
    cheapest = math.inf
    for v in ranked:
        if v.cost.us_per_row_batch64 < cheapest:
            rungs.append(v)
            cheapest = v.cost.us_per_row_batch64
    return rungs


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
