"""The cascade band (issue 15, item 3): which rows a cheap variant answers alone.

A variant of a binary model's ladder scores every row; a row whose positive-class score lies
inside the band ``[low, high]`` (both ends included) is scored again by the full model, and
every other row keeps the variant's score. The band is chosen on the validation rows only
(:func:`choose_band`): among candidate bands that hold the full model's threshold, the one that
escalates the fewest rows while the cascade's PR-AUC and F1 (at the full model's threshold) stay
within :data:`TOLERANCE` of the full model's. The cascade decides at the full model's threshold
(the variant's own is for degrade), so a kept row is called positive when its variant score
reaches that threshold.

Each variant of the ladder gets its band, and the cascade uses the variant whose cascade costs
the least (:func:`relative_cost`, counted in trees so that the choice does not depend on timing
noise; within :data:`COST_TIE`, the largest variant): the cheapest variant often needs most rows
escalated (on the bundled ``xgb_large``, its first 1/8 of the rounds saves nothing, its first
quarter escalates 33% of the validation rows, its first half 9%). No cascade when none is
cheaper than the full model. :func:`export.pipeline.publish_candidate` then reports the chosen
cascade on the test rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

TOLERANCE = 0.005
"""How much PR-AUC and F1 the cascade may lose against the full model on the validation rows."""
COST_TIE = 0.05
"""Cascades whose relative costs (in trees) differ by at most this are equally cheap; the one on
the largest variant is kept."""
EDGES = 48
"""Candidate band edges on each side of the thresholds: quantiles of the variant's validation
scores below the lower threshold (for ``low``) and above the higher one (for ``high``)."""


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    escalated_share: float
    """Share of the rows it was chosen on that it escalates."""
    pr_auc: float
    f1: float
    """The cascade's PR-AUC and F1 on the rows it was chosen on."""


def relative_cost(variant_trees: int, full_trees: int, escalated_share: float) -> float:
    """A cascade's cost per row as a share of the full model's, counted in trees: the variant's
    trees on every row, the full model's on the escalated ones."""
    return variant_trees / full_trees + escalated_share


def break_even_share(variant_trees: int, full_trees: int) -> float:
    """The largest escalated share at which the cascade still evaluates fewer trees per row
    than the full model."""
    return 1.0 - variant_trees / full_trees


def escalated(variant: NDArray[np.float64], low: float, high: float) -> NDArray[np.bool_]:
    """Rows whose variant score lies inside the band (both ends included)."""
    inside: NDArray[np.bool_] = (variant >= low) & (variant <= high)
    return inside


def cascade_scores(
    variant: NDArray[np.float64], full: NDArray[np.float64], low: float, high: float
) -> NDArray[np.float64]:
    """The cascade's positive-class scores: the full model's inside the band, else the
    variant's."""
    scores: NDArray[np.float64] = np.where(escalated(variant, low, high), full, variant)
    return scores


def average_precision(y: NDArray[np.int64], scores: NDArray[np.float64]) -> float:
    """PR-AUC as scikit-learn's ``average_precision_score`` computes it (ties grouped), in
    one sort: the band search evaluates hundreds of bands."""
    order = np.argsort(-scores, kind="mergesort")
    s, hits = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each distinct score
    tp = np.cumsum(hits)[last]
    positives = tp[-1]
    if positives == 0:
        return 0.0
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_step * precision))


def f1_at(y: NDArray[np.int64], scores: NDArray[np.float64], threshold: float) -> float:
    """F1 of the rule ``score >= threshold``."""
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted)) - tp
    fn = int(np.sum(y == 1)) - tp
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def candidate_edges(
    variant: NDArray[np.float64], threshold: float, edges: int = EDGES
) -> tuple[list[float], list[float]]:
    """Candidate ``low`` (descending from ``threshold``) and ``high`` (ascending from it) edges:
    the threshold itself, then quantiles of the variant's scores on either side."""
    below, above = variant[variant < threshold], variant[variant > threshold]
    q = np.linspace(0.0, 1.0, edges + 1)[1:]
    lows = [threshold] + (
        sorted({float(v) for v in np.quantile(below, 1 - q)}, reverse=True) if below.size else []
    )
    highs = [threshold] + (sorted({float(v) for v in np.quantile(above, q)}) if above.size else [])
    return lows, highs


def choose_band(
    y: NDArray[np.int64],
    variant: NDArray[np.float64],
    full: NDArray[np.float64],
    full_threshold: float,
    tolerance: float = TOLERANCE,
    max_share: float = 1.0,
) -> Band | None:
    """The band around ``full_threshold`` that escalates the fewest of these (validation) rows
    while the cascade's PR-AUC and F1 at that threshold are at most ``tolerance`` below the full
    model's; None when no band escalating less than ``max_share`` of the rows does.

    ``y``: 1 for a positive row; ``variant``, ``full``: the positive-class scores.
    """
    y = np.asarray(y, dtype=np.int64)
    want_pr_auc = average_precision(y, full) - tolerance
    want_f1 = f1_at(y, full, full_threshold) - tolerance
    lows, highs = candidate_edges(variant, full_threshold)
    ranked = np.sort(variant)
    n = len(variant)
    bands = sorted(
        (
            (
                int(np.searchsorted(ranked, high, "right") - np.searchsorted(ranked, low, "left")),
                low,
                high,
            )
            for low in lows
            for high in highs
        ),
        key=lambda band: (band[0], band[2] - band[1]),
    )
    for count, low, high in bands:
        if count >= max_share * n:
            break
        scores = cascade_scores(variant, full, low, high)
        f1 = f1_at(y, scores, full_threshold)
        if f1 < want_f1:
            continue
        pr_auc = average_precision(y, scores)
        if pr_auc >= want_pr_auc:
            return Band(low, high, count / n, pr_auc, f1)
    return None


def choose_variant(costs: dict[str, tuple[float, int]]) -> str:
    """The cascade's variant, from each candidate's (:func:`relative_cost`, trees): the largest
    of those within :data:`COST_TIE` of the cheapest (tree counts are a proxy for cost, and the
    largest variant's kept scores are the closest to the full model's, so its accuracy on new
    rows is the least likely to fall below the band's)."""
    cheapest = min(cost for cost, _ in costs.values())
    tied = [name for name, (cost, _) in costs.items() if cost <= cheapest + COST_TIE]
    return max(tied, key=lambda name: costs[name][1])
