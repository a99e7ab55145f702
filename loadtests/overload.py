"""Overload: refuse, degrade, cascade (issue 15): an open-loop scenario past capacity, scored.

The full model's capacity is measured first (a closed-loop cell at high concurrency, cache off);
then requests arrive at a constant rate of 0.5x, 1x, 2x and 3x that capacity whatever the
answers (open loop), :data:`ROWS_PER_REQUEST` labelled hold-out rows each, with a latency budget
(``X-Latency-Budget-Ms``, also sent as ``X-Deadline-Ms``), against three servers: refuse only
(503 queue full / 504 past deadline), degrade (``TABSERVE_DEGRADE_OBJECTIVE_MS``: a cheaper
variant answers when the full model would miss the budget) and cascade
(``TABSERVE_CASCADE_MODELS``).

Latency is measured from the moment a request was *due* (its place in the arrival schedule), not
from when the client got round to sending it, so a client that falls behind cannot hide the
server's queueing (no coordinated omission); how far behind it fell (the send lag) is recorded
to show whether the client, not the server, limited the cell.

Requests carry several rows so that the model, not HTTP, is what the server spends its CPU on:
with one-row requests a 557-tree model is a quarter of the server's work per request, and no
cheaper variant can make room for 3x the traffic (the one-row run showed it, and the client
could not offer more than about 1.2x of it from one core).

Per cell: offered and answered rates, the share of requests answered within the budget (status
200 and a client-measured latency within it), PR-AUC and F1 of the answered rows, effective
recall (the positives answered in time and called positive, over all positives sent: a positive
with no answer in time is a missed one), the variant mix (from ``X-Model-Variant``), and the
server's CPU seconds per answered row. This module imports neither Locust nor gevent, so the
tests exercise it in-process.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from loadtests.promscrape import Samples, by_label
from loadtests.scoring import average_precision, latency_summary, threshold_metrics

MODES: tuple[str, ...] = ("refuse", "degrade", "cascade")
"""How the server meets overload: refuse only (the default), degrade, cascade."""
MODE_TITLES = {
    "refuse": "refuse only",
    "degrade": "degrade",
    "cascade": "cascade",
}
LOAD_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)
"""Offered load as multiples of the full model's measured capacity."""
DEFAULT_BUDGET_MS = 50.0
"""The per-request latency budget (and, with degrade on, the model's objective)."""
ROWS_PER_REQUEST = 32
"""Rows per request of the capacity and open-loop cells (a checkout scoring a basket's worth of
transactions, or a batch of card authorisations)."""
CAPACITY_USERS = 64
"""Closed-loop users of the capacity cell: enough to keep the server's queue never empty."""
OPEN_LOOP_USERS = 4
"""Open-loop Locust users of one cell; each sends its share of the rate on its own schedule."""
CLIENT_LAG_LIMIT_MS = 5.0
"""Send lag (p99) above which the client, not the server, is said to have set the pace."""
OFFERED_SHORTFALL = 0.95
"""A cell that offered less than this share of its target rate was client-limited."""
SERVER_BUSY_PCT = 90.0
"""Server CPU (share of its core) from which a closed-loop rate is the server's capacity."""
VARIANT_ROWS = "tabserve_variant_rows_total"
CASCADE_ROWS = "tabserve_cascade_rows_total"
NO_ANSWER = 0
"""Status recorded for a request with no HTTP answer (a connection error or client timeout, or
still waiting when the cell ended though already past its budget)."""


class _Prediction(msgspec.Struct):
    label: int | str | None = None
    scores: list[float] = []


class _Answer(msgspec.Struct):
    predictions: list[_Prediction]


_decoder = msgspec.json.Decoder(_Answer)


def read_answer(
    body: bytes, positive_index: int, positive_label: object, threshold: float, rows: int
) -> list[tuple[float, int]]:
    """(positive-class score, decision) of each row of a binary answer; the decision is the
    answer's own label (1: the positive class), or the score against ``threshold`` when it has
    none. Raises ValueError for an answer that cannot be read or holds another number of rows."""
    try:
        predictions = _decoder.decode(body).predictions
        scores = [float(p.scores[positive_index]) for p in predictions]
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
        raise ValueError(f"unusable answer: {exc}") from None
    if len(predictions) != rows:
        raise ValueError(f"unusable answer: {len(predictions)} predictions for {rows} rows")
    return [
        (s, int(s >= threshold) if p.label is None else int(str(p.label) == str(positive_label)))
        for p, s in zip(predictions, scores, strict=True)
    ]


@dataclass
class OverloadLog:
    """One open-loop stream's requests, appended as answers arrive: one entry per request, and
    one per row for what is scored per row (labels, scores, decisions)."""

    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    """From the moment the request was due to its answer (or to the end, when unanswered)."""
    lags_ms: array[float] = field(default_factory=lambda: array("d"))
    """From the moment the request was due to the moment the client sent it."""
    sent_at: array[float] = field(default_factory=lambda: array("d"))
    """When the client sent it (``time.perf_counter()``; NaN when not sent): the window over
    which the client really offered the cell's rate."""
    statuses: array[int] = field(default_factory=lambda: array("h"))
    row_request: array[int] = field(default_factory=lambda: array("l"))
    """Per row: the index of its request in the arrays above."""
    labels: array[int] = field(default_factory=lambda: array("b"))
    """Per row: its true class (1: positive)."""
    scores: array[float] = field(default_factory=lambda: array("d"))
    """Per row: the positive-class score answered; NaN when there was no usable answer."""
    decisions: array[int] = field(default_factory=lambda: array("b"))
    """Per row: 1 the answer called it positive (its label), 0 negative, -1 no answer."""
    variants: dict[str, int] = field(default_factory=dict)
    """200 answers (requests) per ``X-Model-Variant`` value (``-`` when the header was absent)."""
    variants_in_time: dict[str, int] = field(default_factory=dict)

    def record(
        self,
        *,
        latency_ms: float,
        lag_ms: float,
        sent_at: float = float("nan"),
        status: int,
        labels: Sequence[int],
        budget_ms: float,
        answers: Sequence[tuple[float, int]] = (),
        variant: str | None = None,
    ) -> None:
        """One request of ``len(labels)`` rows; ``answers``: (score, decision) per row, empty
        when there was no usable answer."""
        index = len(self.statuses)
        self.latencies_ms.append(latency_ms)
        self.lags_ms.append(lag_ms)
        self.sent_at.append(sent_at)
        self.statuses.append(status)
        for i, label in enumerate(labels):
            score, decision = answers[i] if answers else (float("nan"), -1)
            self.row_request.append(index)
            self.labels.append(int(label))
            self.scores.append(score)
            self.decisions.append(decision)
        if status == 200:
            name = variant or "-"
            self.variants[name] = self.variants.get(name, 0) + 1
            if latency_ms <= budget_ms:
                self.variants_in_time[name] = self.variants_in_time.get(name, 0) + 1

    def clear(self) -> None:
        for arr in (
            self.latencies_ms,
            self.lags_ms,
            self.sent_at,
            self.statuses,
            self.row_request,
            self.labels,
            self.scores,
            self.decisions,
        ):
            del arr[:]
        self.variants.clear()
        self.variants_in_time.clear()

    def __len__(self) -> int:
        return len(self.statuses)


def summarize_overload(
    log: OverloadLog,
    *,
    budget_ms: float,
    duration_s: float,
    target_rps: float | None,
    threshold: float,
) -> dict[str, Any]:
    """The cell's figures (JSON-ready); see the module docstring for their definitions.

    F1, precision and recall of the answered rows come from the answers' own labels (the
    decision of whichever model or variant answered, at its threshold); PR-AUC from their
    scores; ``f1_at_full_threshold`` applies the full model's ``threshold`` to every score.
    """
    n = len(log)
    statuses = np.asarray(log.statuses, dtype=np.int64)
    lat = np.asarray(log.latencies_ms, dtype=np.float64)
    lags = np.asarray(log.lags_ms, dtype=np.float64)
    row_request = np.asarray(log.row_request, dtype=np.int64)
    labels = np.asarray(log.labels, dtype=np.int64)
    scores = np.asarray(log.scores, dtype=np.float64)
    decisions = np.asarray(log.decisions, dtype=np.int64)
    answered = np.zeros(n, dtype=bool)  # per request: 200 and every row read
    answered[row_request[decisions >= 0]] = True
    ok_request = (statuses == 200) & answered
    in_time_request = ok_request & (lat <= budget_ms)
    ok = ok_request[row_request]  # per row
    in_time = in_time_request[row_request]
    positives = int(labels.sum())
    sent = np.asarray(log.sent_at, dtype=np.float64)
    sent = sent[~np.isnan(sent)]
    # The window the client really sent in (Locust's run time also holds the users' start-up).
    window = float(sent.max() - sent.min()) if sent.size > 1 else 0.0
    duration = window * sent.size / (sent.size - 1) if window > 0 else max(duration_s, 1e-9)

    def share(mask: Any) -> float | None:
        return float(np.sum(mask)) / n if n else None

    out: dict[str, Any] = {
        "budget_ms": budget_ms,
        "requests": n,
        "rows": int(labels.size),
        "rows_per_request": labels.size / n if n else None,
        "duration_s": duration,
        "locust_duration_s": duration_s,
        "target_rps": target_rps,
        "offered_rps": n / duration,
        "offered_share_of_target": (n / duration) / target_rps if target_rps else None,
        "answered": int(ok_request.sum()),
        "answered_rps": float(ok_request.sum()) / duration,
        "answered_rows": int(ok.sum()),
        "answered_in_budget": int(in_time_request.sum()),
        "answered_in_budget_share": share(in_time_request),
        "answered_share": share(ok_request),
        "late_share": share(ok_request & ~in_time_request),
        "rate_503": share(statuses == 503),
        "rate_504": share(statuses == 504),
        "rate_no_answer": share(statuses == NO_ANSWER),
        "rate_other_errors": share(~ok_request & ~np.isin(statuses, (503, 504, NO_ANSWER))),
        "status_counts": {
            str(int(code)): int(k)
            for code, k in zip(*np.unique(statuses, return_counts=True), strict=True)
        },
        "latency_ok_ms": latency_summary(lat[ok_request]),
        "lag_ms": latency_summary(lags[~np.isnan(lags)]),
        "positives": positives,
        "effective_recall": (
            float(np.sum(in_time & (decisions == 1) & (labels == 1))) / positives
            if positives
            else None
        ),
        "variants": dict(sorted(log.variants.items())),
        "variants_in_time": dict(sorted(log.variants_in_time.items())),
    }
    if ok.any():
        y, s, d = labels[ok], scores[ok], decisions[ok]
        served = threshold_metrics(y, d, 0.5)
        out["accuracy"] = {
            "rows": int(ok.sum()),
            "positives": int(y.sum()),
            "pr_auc": average_precision(y, s),
            "precision": served["precision"],
            "recall": served["recall"],
            "f1": served["f1"],
            "f1_at_full_threshold": threshold_metrics(y, s, threshold)["f1"],
            "threshold": threshold,
        }
    else:
        out["accuracy"] = None
    return out


def server_rows(delta: Samples, model: str) -> dict[str, dict[str, float]]:
    """Rows per variant and the cascade's kept/escalated rows, from a ``/metrics`` difference."""
    return {
        "variant_rows": by_label(delta, VARIANT_ROWS, "variant", model=model),
        "cascade_rows": by_label(delta, CASCADE_ROWS, "path", model=model),
    }


def capacity_of(record: dict[str, Any]) -> tuple[float | None, str]:
    """The full model's capacity in requests per second (of the capacity cell's rows per
    request), from the capacity cell, and how it was found.

    When the server's core was busy (>= 90%, counting what other processes took of it) the
    answered rate is its capacity on that core as it was. When it was not (the load generator,
    not the server, set the pace), the rate is scaled up to the share of the core the server
    could have had (a linear estimate; batching grows under a longer queue, so the true
    capacity is, if anything, higher).
    """
    if record.get("failed"):
        return None, "capacity cell failed"
    ok = float(record.get("ok") or 0.0)
    duration = float(record.get("duration_measured_s") or record.get("seconds") or 0.0)
    if ok <= 0 or duration <= 0:
        return None, "no answers in the capacity cell"
    rate = ok / duration
    cpu = record.get("cpu") or {}
    server_pct = cpu.get("server_pct")
    others = float(cpu.get("others_server_core_pct") or 0.0)
    if server_pct is None or float(server_pct) + others >= SERVER_BUSY_PCT:
        return rate, "measured"
    available = max(100.0 - others, 10.0)
    used = max(float(server_pct), 1.0)
    return rate * available / used, (
        f"estimated: {rate:.0f} req/s at {used:.0f}% server CPU of the {available:.0f}% "
        "left by other processes"
    )


def client_limited(cell: dict[str, Any]) -> list[str]:
    """Why the client, not the server, may have set this open-loop cell's pace (empty: it did
    not)."""
    ov = cell.get("overload") or {}
    reasons = []
    offered = ov.get("offered_share_of_target")
    if offered is not None and offered < OFFERED_SHORTFALL:
        reasons.append(f"offered {offered:.0%} of the target rate")
    lag = (ov.get("lag_ms") or {}).get("p99")
    if lag is not None and lag > CLIENT_LAG_LIMIT_MS:
        reasons.append(f"send lag p99 {lag:.1f} ms")
    locust = (cell.get("cpu") or {}).get("locust_pct")
    if locust is not None and float(locust) >= SERVER_BUSY_PCT:
        reasons.append(f"Locust CPU {float(locust):.0f}%")
    return reasons


def cpu_per_answered_row(cell: dict[str, Any]) -> float | None:
    """Server CPU seconds per answered row during the cell."""
    server_s = (cell.get("cpu") or {}).get("server_s")
    ov = cell.get("overload") or {}
    answered = ov.get("answered_rows", ov.get("answered"))
    if server_s is None or not answered:
        return None
    return float(server_s) / float(answered)


def overload_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open-loop cells of a run that finished, in mode then load order."""
    chosen = [c for c in cells if c.get("group") == "overload" and not c.get("failed")]
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(
        chosen,
        key=lambda c: (order.get(str(c.get("overload_mode")), 9), float(c.get("load_factor") or 0)),
    )


__all__ = [
    "CAPACITY_USERS",
    "DEFAULT_BUDGET_MS",
    "LOAD_FACTORS",
    "MODES",
    "ROWS_PER_REQUEST",
    "OverloadLog",
    "capacity_of",
    "client_limited",
    "cpu_per_answered_row",
    "overload_cells",
    "read_answer",
    "server_rows",
    "summarize_overload",
]
