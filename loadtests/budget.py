"""Latency budgets: ``"p99<=5ms@500rps"`` parsed, and answered from a sweep's cells.

Syntax: ``p<percentile> <= <limit><unit> @ <rate>rps`` with unit ``us``, ``ms`` or ``s``;
spaces are optional. The percentile must be one the load tests record (50, 90, 95, 99, 99.9).

A model *fits* when a cell measured it at the budget's rate (open-ended pacing, ``group ==
"budget"``) reaching at least 95% of the rate, within the latency limit, with under 1% errors
(503s count). Without such a cell the answer is *inferred* from closed-loop one-row cells: a
cell that sustained at least the rate within the limit shows the model fits (a lower offered
load would not be slower); if none did, the model is "not shown to fit".

:func:`recommend` turns the verdicts into the answer a person wants: per dataset, the most
accurate model among those that fit, by the headline metric of the dataset's task under load on
its hold-out (PR-AUC for binary, macro-F1 for multiclass, the lowest MAE for regression).
``make loadtest`` answers :data:`DEFAULT_BUDGET` unless told otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from loadtests.results import dataset_headline, model_accuracy, model_headline
from loadtests.scoring import LATENCY_PERCENTILES, Headline, headline, percentile_key

DEFAULT_BUDGET = "p99<=5ms@500rps"
"""The budget the sweep answers unless given another: a fraud check on the request path that
must answer 99% of requests within 5 ms while the service takes 500 requests a second."""
RATE_TOLERANCE = 0.95
MAX_ERROR_RATE = 0.01
_PATTERN = re.compile(
    r"^\s*p(?P<p>\d+(?:\.\d+)?)\s*<=?\s*(?P<limit>\d+(?:\.\d+)?)\s*(?P<unit>us|µs|ms|s)\s*"
    r"@\s*(?P<rate>\d+(?:\.\d+)?)\s*(?:rps|req/s|/s)\s*$",
    re.IGNORECASE,
)
_UNIT_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Budget:
    percentile: float
    limit_ms: float
    rate_rps: float

    @property
    def key(self) -> str:
        """The latency summary's key for this percentile ('p99')."""
        return percentile_key(self.percentile)

    def __str__(self) -> str:
        return f"p{self.percentile:g}<={self.limit_ms:g}ms@{self.rate_rps:g}rps"

    def describe(self) -> str:
        """The budget in words: 'p99 <= 5 ms at 500 req/s'."""
        return f"{self.key} <= {self.limit_ms:g} ms at {self.rate_rps:g} req/s"


def parse_budget(text: str) -> Budget:
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"budget must look like 'p99<=5ms@500rps', got {text!r}")
    percentile = float(match["p"])
    if percentile not in LATENCY_PERCENTILES:
        allowed = ", ".join(f"{p:g}" for p in LATENCY_PERCENTILES)
        raise ValueError(
            f"budget percentile p{percentile:g} is not recorded (use one of {allowed})"
        )
    limit_ms = float(match["limit"]) * _UNIT_MS[match["unit"].lower()]
    rate = float(match["rate"])
    if limit_ms <= 0 or rate <= 0:
        raise ValueError(f"budget limit and rate must be positive, got {text!r}")
    return Budget(percentile, limit_ms, rate)


@dataclass(frozen=True)
class Verdict:
    model: str
    fits: bool
    how: str
    """'measured' (a paced cell at the budget's rate), 'inferred' (closed loop) or 'no data'."""
    evidence: str
    latency_ms: float | None = None
    """The budget's percentile in the cell the verdict rests on."""
    rate_rps: float | None = None
    """The throughput that cell reached."""
    cell: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """The cell the verdict rests on (None without data)."""


def _latency(cell: dict[str, Any], budget: Budget) -> float | None:
    value = (cell.get("latency_ms") or {}).get(budget.key)
    return None if value is None else float(value)


def _ok(cell: dict[str, Any], budget: Budget, rate_needed: float) -> bool:
    lat = _latency(cell, budget)
    return (
        lat is not None
        and lat <= budget.limit_ms
        and float(cell.get("throughput_rps", 0.0)) >= rate_needed
        and float(cell.get("error_rate", 1.0)) <= MAX_ERROR_RATE
    )


def _describe(cell: dict[str, Any], budget: Budget) -> str:
    lat = _latency(cell, budget)
    lat_text = "n/a" if lat is None else f"{lat:.2f} ms"
    return (
        f"{cell.get('throughput_rps', 0.0):.0f} req/s, {budget.key} {lat_text}, "
        f"errors {float(cell.get('error_rate', 0.0)):.1%} ({cell.get('users')} users, "
        f"{cell.get('server_label', '')})"
    )


def _numbers(cell: dict[str, Any], budget: Budget) -> tuple[float | None, float, dict[str, Any]]:
    return _latency(cell, budget), float(cell.get("throughput_rps") or 0.0), cell


def answer(cells: list[dict[str, Any]], budget: Budget, models: list[str]) -> list[Verdict]:
    """One verdict per model, in the order given."""
    verdicts: list[Verdict] = []
    for model in models:
        own = [c for c in cells if c.get("model") == model and not c.get("failed")]
        paced = [
            c
            for c in own
            if c.get("group") == "budget"
            and abs(float(c.get("target_rps") or 0) - budget.rate_rps) < 1e-6
        ]
        if paced:
            best = min(paced, key=lambda c: _latency(c, budget) or float("inf"))
            fits = _ok(best, budget, RATE_TOLERANCE * budget.rate_rps)
            verdicts.append(
                Verdict(model, fits, "measured", _describe(best, budget), *_numbers(best, budget))
            )
            continue
        closed = [c for c in own if c.get("scenario") == "SteadyOneRow" and not c.get("target_rps")]
        if not closed:
            verdicts.append(Verdict(model, False, "no data", "no one-row cell for this model"))
            continue
        fitting = [c for c in closed if _ok(c, budget, budget.rate_rps)]
        if fitting:
            best = min(fitting, key=lambda c: _latency(c, budget) or float("inf"))
            verdicts.append(
                Verdict(model, True, "inferred", _describe(best, budget), *_numbers(best, budget))
            )
        else:
            best = max(closed, key=lambda c: float(c.get("throughput_rps", 0.0)))
            verdicts.append(
                Verdict(
                    model,
                    False,
                    "inferred",
                    "best seen: " + _describe(best, budget),
                    *_numbers(best, budget),
                )
            )
    return verdicts


@dataclass(frozen=True)
class Ranked:
    """One model of a recommendation: its accuracy and whether it fits the budget."""

    model: str
    accuracy: float | None
    """The task's headline metric under load on the model's hold-out (the model card's offline
    figure if no cell scored it): PR-AUC, macro-F1 or MAE."""
    verdict: Verdict


@dataclass(frozen=True)
class Recommendation:
    """The answer for one dataset: which model to deploy under the budget, and the others."""

    dataset: str
    budget: Budget
    ranked: list[Ranked]
    """Every model of the dataset, most accurate first (faster first on a tie)."""
    metric: Headline = field(default_factory=lambda: headline("binary"))
    """What "most accurate" means for this dataset's task."""

    @property
    def fitting(self) -> list[Ranked]:
        return [r for r in self.ranked if r.verdict.fits]

    @property
    def choice(self) -> Ranked | None:
        """The most accurate model that fits, or None when none does."""
        return next(iter(self.fitting), None)

    @property
    def more_accurate_over_budget(self) -> list[Ranked]:
        """Models more accurate than the choice that do not fit (all of them if none fits)."""
        out: list[Ranked] = []
        for r in self.ranked:
            if r is self.choice:
                break
            out.append(r)
        return out

    @property
    def closest(self) -> Ranked | None:
        """When nothing fits: the model whose evidence came nearest the latency limit."""
        seen = [r for r in self.ranked if r.verdict.latency_ms is not None]
        return min(seen, key=lambda r: r.verdict.latency_ms or math.inf, default=None)


def _accuracy(cells: list[dict[str, Any]], model: str) -> float | None:
    key = model_headline(cells, model).key
    acc = model_accuracy(cells, model)
    value = None if acc is None else acc.get(key)
    if value is None:
        offline: dict[str, Any] = next(
            (c["offline"] for c in cells if c.get("model") == model and c.get("offline")), {}
        )
        value = offline.get(key)
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def recommend(cells: list[dict[str, Any]], budget: Budget) -> list[Recommendation]:
    """Per dataset (accuracy on different data is not comparable), the most accurate model that
    fits the budget, with every other model ranked beside it."""
    datasets: dict[str, list[str]] = {}
    for c in cells:
        if c.get("model") and not c.get("failed") and c.get("shift") is None:
            names = datasets.setdefault(str(c.get("dataset") or "?"), [])
            if c["model"] not in names:
                names.append(c["model"])
    out: list[Recommendation] = []
    for dataset, models in sorted(datasets.items()):
        verdicts = answer(cells, budget, sorted(models))
        metric = dataset_headline(cells, dataset)
        ranked = [Ranked(v.model, _accuracy(cells, v.model), v) for v in verdicts]
        ranked.sort(
            key=lambda r: (
                r.accuracy is None,
                -metric.goodness(r.accuracy or 0.0),
                r.verdict.latency_ms if r.verdict.latency_ms is not None else math.inf,
            )
        )
        out.append(Recommendation(dataset, budget, ranked, metric))
    return out
