"""Latency budgets: ``"p99<=5ms@500rps"`` parsed, and answered from a sweep's cells.

Syntax: ``p<percentile> <= <limit><unit> @ <rate>rps`` with unit ``us``, ``ms`` or ``s``;
spaces are optional. The percentile must be one the load tests record (50, 90, 95, 99, 99.9).

A model *fits* when a cell measured it at the budget's rate (open-ended pacing, ``group ==
"budget"``) reaching at least 95% of the rate, within the latency limit, with under 1% errors
(503s count). Without such a cell the answer is *inferred* from closed-loop one-row cells: a
cell that sustained at least the rate within the limit shows the model fits (a lower offered
load would not be slower); if none did, the model is "not shown to fit".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loadtests.scoring import LATENCY_PERCENTILES, percentile_key

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
            verdicts.append(Verdict(model, fits, "measured", _describe(best, budget)))
            continue
        closed = [c for c in own if c.get("scenario") == "SteadyOneRow" and not c.get("target_rps")]
        if not closed:
            verdicts.append(Verdict(model, False, "no data", "no one-row cell for this model"))
            continue
        fitting = [c for c in closed if _ok(c, budget, budget.rate_rps)]
        if fitting:
            best = min(fitting, key=lambda c: _latency(c, budget) or float("inf"))
            verdicts.append(Verdict(model, True, "inferred", _describe(best, budget)))
        else:
            best = max(closed, key=lambda c: float(c.get("throughput_rps", 0.0)))
            verdicts.append(
                Verdict(model, False, "inferred", "best seen: " + _describe(best, budget))
            )
    return verdicts
