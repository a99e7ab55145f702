"""One model version's monitor: input drift, prediction drift and live quality.

The batcher calls :meth:`ModelMonitor.observe` once per answered batch (it satisfies the
batcher's ``BatchObserver`` protocol), on the event loop, before the batch's responses are
written: its cost is on the request path. So ``observe`` does almost nothing: it appends
references to the batch's arrays, its arrival time and its request ids to a pending list
(well under 1 us). The pending batches are *folded* -- validated, concatenated, binned into the
rolling window in one vectorised pass, and remembered for feedback -- once ``fold_rows`` rows are
pending (which bounds the memory held), and before anything reads: :meth:`snapshot` (and so the
Prometheus collector), :meth:`feedback`, :meth:`flush`, and the status re-evaluation that
``observe`` runs at most once per ``status_interval_s`` to log transitions into and out of the
drift state even when nobody reads. Reads are therefore exact, and each row keeps its own
arrival time for the window's time-based expiry. Measured with
``loadtests/bench/monitor_observe.py`` (CPU time per row, amortised over the folds, on a shared
2-core machine): about 2 us at batch 1 (18-19 us when every call binned its own batch),
0.8-0.9 us at batch 16 and 64 (1.9 and 1.2 us before). A fold of 256 one-row batches takes
about 0.4 ms, on the request that triggers it.

Holding references means the batcher must not write into the arrays it passed once ``observe``
returns (it does not: each batch's rows and scores are fresh arrays, or views of a request's
decoded rows, which nothing mutates).

Nothing in ``observe`` may fail a prediction: it catches every exception, logs the first of a
kind, and counts it in the snapshot's ``observed`` section (a malformed batch is caught when it
is folded, and counted there the same way).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from server.errors import InvalidInput
from server.modelcard import ModelCard
from server.monitoring.feedback import QualityWindow, ServedRows
from server.monitoring.stats import (
    Status,
    ks_binned,
    ks_pvalue,
    psi,
    psi_status,
    worst,
)
from server.monitoring.window import BinnedWindow
from server.settings import Settings

logger = logging.getLogger(__name__)

_PendingBatch = tuple[Any, Any, Sequence[tuple[str, int, int]], float]
"""An observed batch not yet folded: rows, scores, (request_id, start_row, row_count)s, arrival
time."""


class _Gathered(NamedTuple):
    """Pending batches joined for one fold."""

    rows: NDArray[Any]
    scores: NDArray[Any]
    arrived: NDArray[np.float64]
    """Arrival time of every row."""
    n_batches: int
    requests: list[tuple[str, int, int]]
    """(request_id, start_row, row_count) of the rows to remember, in row order."""
    remembered: NDArray[np.bool_] | None
    """Rows to remember for feedback (None: all)."""


TOP_DRIFTING = 5
"""Features listed under ``top_drifting`` in a snapshot."""


@dataclass(frozen=True)
class MonitorParams:
    """The monitoring knobs; :meth:`from_settings` takes them from :class:`Settings`."""

    drift_window_rows: int = 5_000
    drift_window_s: float = 600.0
    drift_min_rows: int = 500
    psi_watch: float = 0.1
    psi_drift: float = 0.25
    feedback_capacity: int = 100_000
    quality_window_labels: int = 5_000
    status_interval_s: float = 1.0
    """``observe`` re-evaluates the status (to log transitions) at most this often."""
    fold_rows: int = 256
    """``observe`` folds its pending batches into the window once this many rows are pending
    (an empty batch counts as one); reads fold whatever is pending first."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorParams:
        return cls(
            drift_window_rows=settings.drift_window_rows,
            drift_window_s=settings.drift_window_s,
            drift_min_rows=settings.drift_min_rows,
            psi_watch=settings.psi_watch,
            psi_drift=settings.psi_drift,
            feedback_capacity=settings.feedback_capacity,
            quality_window_labels=settings.quality_window_labels,
        )


@dataclass(frozen=True)
class FeedbackResult:
    """What a label was matched to."""

    matched_by: str
    """"request_id" or "row_hash"."""
    score: float
    """The positive-class score the server answered for that row."""
    predicted_positive: bool
    """Whether that score was at or above the decision threshold."""
    label: int
    replaced: bool
    """True when this label replaced an earlier label for the same row."""


class ModelMonitor:
    """Drift and quality monitor of one model version (a ``BatchObserver`` for the batcher).

    ``clock`` is a monotonic clock in seconds (injectable for tests); ``wall_clock`` gives the
    Unix time used only to print timestamps.
    """

    def __init__(
        self,
        card: ModelCard,
        params: Settings | MonitorParams | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if params is None:
            params = MonitorParams()
        elif isinstance(params, Settings):
            params = MonitorParams.from_settings(params)
        self.card = card
        self.params = params
        self._clock = clock
        self._lock = threading.Lock()
        self._n_features = card.input.n_features
        self._positive_index = card.positive_index
        self._n_classes = len(card.classes)
        self._threshold = card.threshold
        ref = card.reference
        # Window columns: every feature, then the positive score on the training score bins, then
        # the positive score against the threshold alone (bin 1 = predicted positive).
        edges: list[list[float]] = [f.histogram.bin_edges for f in ref.features]
        edges.append(ref.scores.bin_edges)
        edges.append([self._threshold])
        self._window = BinnedWindow(
            edges, capacity_rows=params.drift_window_rows, max_age_s=params.drift_window_s
        )
        self._score_column = self._n_features
        self._threshold_column = self._n_features + 1
        self._ref_counts: list[NDArray[np.int64]] = [
            np.array([*f.histogram.counts, f.missing], dtype=np.int64) for f in ref.features
        ]
        self._ref_scores = np.array([*ref.scores.counts, 0], dtype=np.int64)
        self._served = ServedRows(params.feedback_capacity, self._n_features)
        self._quality = QualityWindow(params.quality_window_labels, self._threshold)
        self._started = clock()
        self._started_wall = wall_clock()
        self._status: Status = "insufficient_data"
        self._status_since = self._started
        self._next_status_check = self._started + params.status_interval_s
        self._pending: list[_PendingBatch] = []
        self._pending_rows = 0
        # Counters as of the last fold (every read folds first; so does flush()).
        self.rows_total = 0
        self.batches_total = 0
        self.rejected_batches = 0
        """Batches not observed at all (wrong shape)."""
        self.feedback_skipped_batches = 0
        """Batches binned for drift but not remembered for feedback (request counts off)."""
        self.errors = 0
        """Exceptions caught while observing or folding."""
        self._logged_problems: set[str] = set()

    # --- the batcher's side ------------------------------------------------------------------

    def observe(
        self,
        rows: NDArray[np.float32],
        scores: NDArray[np.float32],
        requests: Sequence[tuple[str, int, int]],
    ) -> None:
        """Queue an answered batch for the window and the feedback memory. Never raises.

        Keeps references to ``rows`` and ``scores`` until the next fold: the caller must not
        write into them afterwards.
        """
        try:
            now = self._clock()
            try:
                n = len(rows) or 1  # an empty batch still takes a place in the pending list
            except TypeError:  # not an array: the fold rejects it
                n = 1
            with self._lock:
                self._pending.append((rows, scores, requests, now))
                self._pending_rows += n
                if self._pending_rows >= self.params.fold_rows:
                    self._fold(now)
                if now >= self._next_status_check:
                    self._next_status_check = now + self.params.status_interval_s
                    self._fold(now)
                    self._update_status(self._feature_psi(), self._score_psi(), now)
        except Exception as exc:  # a monitoring bug must never fail a prediction
            self.errors += 1
            self._log_once(type(exc).__name__, f"observe failed: {exc!r}", exc_info=True)

    def flush(self) -> None:
        """Fold the pending batches into the window and the feedback memory now."""
        with self._lock:
            self._fold(self._clock())

    def _fold(self, now: float) -> None:
        """Validate the pending batches, then bin and remember them in one vectorised pass.

        Called with the lock held. A malformed batch is rejected (counted, logged once) without
        losing the others; an unexpected error loses the pending batches and is counted.
        """
        pending = self._pending
        if not pending:
            self._window.expire(now)
            return
        self._pending = []
        self._pending_rows = 0
        try:
            gathered = self._gather_fast(pending)
            if gathered is None:
                gathered = self._gather_checked(pending)
            if gathered is None:
                self._window.expire(now)
            else:
                self._add(gathered, now)
        except Exception as exc:
            self.errors += 1
            self._log_once(type(exc).__name__, f"fold failed: {exc!r}", exc_info=True)

    def _gather_fast(self, pending: list[_PendingBatch]) -> _Gathered | None:
        """The batcher's case, every batch well formed, checked and joined with C-level calls
        (no Python loop per batch); None when anything is off, for :meth:`_gather_checked`."""
        try:
            rows_l, scores_l, requests_l, times_l = zip(*pending, strict=True)
            counts = list(map(len, rows_l))
            if 0 in counts or list(map(len, scores_l)) != counts:
                return None
            rows = np.concatenate(rows_l)
            scores = np.concatenate(scores_l)
            if (
                rows.dtype.kind != "f"
                or scores.dtype.kind != "f"
                or rows.ndim != 2
                or rows.shape[1] != self._n_features
                or scores.shape != (rows.shape[0], self._n_classes)
            ):
                return None
            # Each batch's request row counts must add up to its rows.
            per_batch = list(map(len, requests_l))
            if 0 in per_batch:
                return None
            requests: list[tuple[str, int, int]] = list(chain.from_iterable(requests_l))
            request_rows = np.fromiter(
                map(itemgetter(2), requests), dtype=np.int64, count=len(requests)
            )
            lengths = np.array(per_batch, dtype=np.intp)
            starts = np.cumsum(lengths) - lengths
            if not np.array_equal(np.add.reduceat(request_rows, starts), counts):
                return None
        except Exception:
            return None
        arrived = np.repeat(np.array(times_l, dtype=np.float64), counts)
        return _Gathered(rows, scores, arrived, len(counts), requests, None)

    def _gather_checked(self, pending: list[_PendingBatch]) -> _Gathered | None:
        """Batch by batch: reject malformed ones, keep the rest; None when none is left."""
        row_parts: list[NDArray[Any]] = []
        score_parts: list[NDArray[Any]] = []
        counts: list[int] = []
        arrived: list[float] = []
        remembered: list[bool] = []
        requests_all: list[tuple[str, int, int]] = []
        f, k = self._n_features, self._n_classes
        for rows, scores, requests, t in pending:
            try:
                rows = np.asarray(rows, dtype=np.float32)
                scores = np.asarray(scores, dtype=np.float32)
                shape = rows.shape
                if len(shape) != 2 or shape[1] != f:
                    self._reject("rows", f"rows of shape {shape}, expected [n, {f}]")
                    continue
                n = shape[0]
                if scores.shape != (n, k):
                    self._reject("scores", f"scores of shape {scores.shape}, expected [{n}, {k}]")
                    continue
                if n == 0:
                    continue
                complete = sum(count for _, _, count in requests) == n
            except Exception as exc:  # e.g. rows that are not numbers
                self.errors += 1
                self._log_once(type(exc).__name__, f"observe failed: {exc!r}", exc_info=True)
                continue
            row_parts.append(rows)
            score_parts.append(scores)
            counts.append(n)
            arrived.append(t)
            remembered.append(complete)
            if complete:
                requests_all.extend(requests)
            else:
                self.feedback_skipped_batches += 1
                self._log_once("requests", "request row counts do not add up to the batch's rows")
        if not row_parts:
            return None
        keep = None if all(remembered) else np.repeat(np.array(remembered), counts)
        return _Gathered(
            np.concatenate(row_parts),
            np.concatenate(score_parts),
            np.repeat(np.array(arrived, dtype=np.float64), counts),
            len(counts),
            requests_all,
            keep,
        )

    def _add(self, batches: _Gathered, now: float) -> None:
        """Bin the gathered rows into the window, remember them for feedback, count them."""
        f = self._n_features
        total = batches.rows.shape[0]
        positive = batches.scores[:, self._positive_index]
        columns = np.empty((total, f + 2), dtype=np.float32)
        columns[:, :f] = batches.rows
        columns[:, self._score_column] = positive
        columns[:, self._threshold_column] = positive
        self._window.add(columns, now, arrived=batches.arrived)
        self.rows_total += total
        self.batches_total += batches.n_batches
        keep = batches.remembered
        if keep is None:
            self._served.record(batches.rows, positive, batches.requests)
        elif keep.any():
            self._served.record(batches.rows[keep], positive[keep], batches.requests)

    # --- feedback ----------------------------------------------------------------------------

    def feedback(
        self,
        *,
        label: int,
        request_id: str | None = None,
        row: int = 0,
        row_hash: str | None = None,
    ) -> FeedbackResult:
        """Attach a true label to a served row, found by ``(request_id, row)`` or by ``row_hash``.

        Raises InvalidInput for a label that is not one of the model's classes or when not
        exactly one of ``request_id`` and ``row_hash`` is given, and UnknownFeedbackId when the
        row was never served or has been forgotten (more than ``feedback_capacity`` rows ago).
        """
        if isinstance(label, bool) or label not in self.card.classes:
            raise InvalidInput(f"label {label!r} is not one of the classes {self.card.classes}")
        if (request_id is None) == (row_hash is None):
            raise InvalidInput("give exactly one of request_id and row_hash")
        with self._lock:
            self._fold(self._clock())
            if request_id is not None:
                seq = self._served.find_by_request(request_id, row)
                matched_by = "request_id"
            else:
                assert row_hash is not None
                seq = self._served.find_by_hash(row_hash)
                matched_by = "row_hash"
            score = self._served.score(seq)
            ref, replaced = self._quality.add(
                score, label == self.card.positive_class, seq, self._served.label_ref(seq)
            )
            self._served.set_label_ref(seq, ref)
        return FeedbackResult(
            matched_by=matched_by,
            score=score,
            predicted_positive=score >= self._threshold,
            label=label,
            replaced=replaced,
        )

    # --- reading -----------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Overall status as last evaluated (by ``observe``'s periodic check or a snapshot)."""
        return self._status

    def snapshot(self) -> dict[str, Any]:
        """The monitoring state as a JSON-ready dict (shape documented in the package docstring)."""
        with self._lock:
            now = self._clock()
            self._fold(now)
            feature_psi = self._feature_psi()
            score_psi = self._score_psi()
            self._update_status(feature_psi, score_psi, now)
            return self._snapshot(feature_psi, score_psi, now)

    def _snapshot(self, feature_psi: list[float], score_psi: float, now: float) -> dict[str, Any]:
        p = self.params
        rows = self._window.rows
        oldest = self._window.oldest_time()
        features: list[dict[str, Any]] = []
        for j, name in enumerate(self.card.input.feature_names):
            live = self._window.column_counts(j)
            ref = self._ref_counts[j]
            distance = ks_binned(ref[:-1], live[:-1])
            features.append(
                {
                    "name": name,
                    "psi": _num(feature_psi[j]),
                    "ks": _num(distance),
                    "ks_pvalue": _num(
                        ks_pvalue(distance, int(ref[:-1].sum()), int(live[:-1].sum()))
                    ),
                    "missing_rate": _num(live[-1] / rows) if rows else None,
                    "status": self._psi_status(feature_psi[j]),
                }
            )
        ranked = sorted(
            (j for j, v in enumerate(feature_psi) if math.isfinite(v)),
            key=lambda j: feature_psi[j],
            reverse=True,
        )
        threshold_counts = self._window.column_counts(self._threshold_column)
        scored = int(threshold_counts[:2].sum())
        reference = self.card.reference
        return {
            "model": self.card.name,
            "version": self.card.version,
            "status": self._status,
            "status_since": self._iso(self._status_since),
            "since": self._iso(self._started),
            "window": {
                "rows": rows,
                "seconds": round(now - oldest, 3) if oldest is not None else 0.0,
                "max_rows": p.drift_window_rows,
                "max_seconds": p.drift_window_s,
                "min_rows": p.drift_min_rows,
            },
            "thresholds": {
                "psi_watch": p.psi_watch,
                "psi_drift": p.psi_drift,
                "min_rows": p.drift_min_rows,
                "decision_threshold": self._threshold,
            },
            "features": features,
            "top_drifting": [
                {k: features[j][k] for k in ("name", "psi", "status")}
                for j in ranked[:TOP_DRIFTING]
            ],
            "scores": {
                "psi": _num(score_psi),
                "status": self._psi_status(score_psi),
                "ks": _num(
                    ks_binned(
                        self._ref_scores[:-1], self._window.column_counts(self._score_column)[:-1]
                    )
                ),
                "positive_rate": _num(threshold_counts[1] / scored) if scored else None,
                "reference_positive_rate": reference.predicted_positive_rate,
                "base_rate": reference.base_rate,
            },
            "quality": {
                **self._quality.summary(),
                "threshold": self._threshold,
                "reference": {
                    "precision": self.card.metrics.precision,
                    "recall": self.card.metrics.recall,
                    "f1": self.card.metrics.f1,
                    "brier": self.card.metrics.brier,
                },
            },
            "observed": {
                "rows_total": self.rows_total,
                "batches_total": self.batches_total,
                "rejected_batches": self.rejected_batches,
                "feedback_skipped_batches": self.feedback_skipped_batches,
                "errors": self.errors,
                "feedback_rows_remembered": self._served.remembered,
                "feedback_capacity": self._served.capacity,
                "feedback_requests_indexed": self._served.requests_indexed,
                "feedback_hashes_indexed": self._served.hashes_indexed,
            },
        }

    # --- internals ---------------------------------------------------------------------------

    def _feature_psi(self) -> list[float]:
        return [psi(ref, self._window.column_counts(j)) for j, ref in enumerate(self._ref_counts)]

    def _score_psi(self) -> float:
        return psi(self._ref_scores, self._window.column_counts(self._score_column))

    def _psi_status(self, value: float) -> Status:
        p = self.params
        return psi_status(
            value,
            self._window.rows,
            min_rows=p.drift_min_rows,
            watch=p.psi_watch,
            drift=p.psi_drift,
        )

    def _update_status(self, feature_psi: list[float], score_psi: float, now: float) -> None:
        new = worst([self._psi_status(v) for v in [*feature_psi, score_psi]])
        old = self._status
        if new == old:
            return
        self._status = new
        self._status_since = now
        name = f"{self.card.name}/{self.card.version}"
        if new == "drift":
            drifting = sorted(
                (
                    (v, f)
                    for v, f in zip(feature_psi, self.card.input.feature_names, strict=True)
                    if math.isfinite(v) and v > self.params.psi_drift
                ),
                reverse=True,
            )
            logger.warning(
                "model %s entered drift over %d rows: %s; score PSI %.3f",
                name,
                self._window.rows,
                ", ".join(f"{f} PSI {v:.3f}" for v, f in drifting) or "no single feature",
                score_psi,
            )
        elif old == "drift":
            logger.info("model %s left drift, now %s", name, new)

    def _reject(self, kind: str, message: str) -> None:
        self.rejected_batches += 1
        self._log_once(f"reject:{kind}", f"observe skipped a batch: {message}")

    def _log_once(self, key: str, message: str, *, exc_info: bool = False) -> None:
        name = f"{self.card.name}/{self.card.version}"
        if key in self._logged_problems:
            logger.debug("monitor %s: %s", name, message)
            return
        self._logged_problems.add(key)
        logger.warning(
            "monitor %s: %s (logged once; counted in snapshots)", name, message, exc_info=exc_info
        )

    def _iso(self, monotonic: float) -> str:
        wall = self._started_wall + (monotonic - self._started)
        return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


def _num(value: float | np.floating[Any]) -> float | None:
    """A finite float for JSON, or None."""
    v = float(value)
    return v if math.isfinite(v) else None


__all__ = ["FeedbackResult", "ModelMonitor", "MonitorParams"]
