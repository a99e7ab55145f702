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
drift state even when nobody reads (a shared monitor leaves that to the publishing loop). Reads
are therefore exact, and each row keeps its own arrival time for the window's time-based expiry.
Measured with ``loadtests/bench/monitor_observe.py`` (CPU time per row, amortised over the
folds, on a shared 2-core machine): about 2 us at batch 1 (18-19 us when every call binned its
own batch), 0.8-0.9 us at batch 16 and 64 (1.9 and 1.2 us before). A fold of 256 one-row
batches takes about 0.4-0.6 ms: so that no request waits for it and the loop does not stall,
``observe`` called on a running event loop (the batcher's case) only schedules it with
``call_soon``, to run after the current callback (so after the answer is written) in steps of at
most ``FOLD_STEP_BATCHES`` batches, the loop serving I/O between them, and a step queued before a
request arrived lets that request go first (``server.activity``); the due status evaluation is
deferred the same way. Off the loop (the shadow thread, tests), or once
``FOLD_BACKLOG_FACTOR * fold_rows`` rows wait because the loop does not get to the steps,
``observe`` folds inline. Reads fold whatever still waits, scheduled or not, in arrival order.

Holding references means the batcher must not write into the arrays it passed once ``observe``
returns (it does not: each batch's rows and scores are fresh arrays, or views of a request's
decoded rows, which nothing mutates).

With ``--workers N`` each worker has its own monitor per version; :meth:`ModelMonitor.state`
is what one worker publishes for the others (its window's bin totals, its quality window's
sufficient statistics, its counters), and :meth:`ModelMonitor.snapshot` given the other workers'
states (``peers``) answers for all of them: bin totals and statistics summed, PSI, KS and status
computed on the sums (``server.monitoring.shared`` carries the states between workers). Such a
*shared* monitor's status follows the merged view: ``observe`` no longer re-evaluates it, the
publishing loop does (:meth:`ModelMonitor.refresh_status`), and one worker logs transitions.

Nothing in ``observe`` may fail a prediction: it catches every exception, logs the first of a
kind, and counts it in the snapshot's ``observed`` section (a malformed batch is caught when it
is folded, and counted there the same way).
"""

from __future__ import annotations

import asyncio
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

from server.activity import ACTIVITY
from server.errors import InvalidInput, UnknownFeedbackId
from server.modelcard import Column, FeatureReference, Label, ModelCard
from server.monitoring.feedback import ServedRows
from server.monitoring.quality import add_stats
from server.monitoring.stats import (
    Status,
    ks_binned,
    ks_pvalue,
    psi,
    psi_status,
    worst,
)
from server.monitoring.tasks import task_monitor
from server.monitoring.window import BinnedWindow, Counts, WindowCounts
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
    shadowed: NDArray[np.bool_] | None = None
    """Rows scored in shadow, not answered (None: none), for every row."""


class ShadowParts(list[tuple[str, int, int]]):
    """The request parts of a batch this version scored in shadow (``observe_shadow``): its rows
    are remembered as not answered by it."""


def _shadowed(requests_l: Sequence[Any], counts: list[int]) -> NDArray[np.bool_] | None:
    flags = [isinstance(r, ShadowParts) for r in requests_l]
    return np.repeat(np.array(flags, dtype=bool), counts) if any(flags) else None


FOLD_STEP_BATCHES = 32
"""On the event loop, a scheduled fold step folds at most this many pending batches (about
0.1 ms of one-row batches, warm: short enough to fit between two requests at one connection;
64 took 0.16-0.2 ms, 16 cost twice the CPU a row), then yields to the loop."""
FOLD_BACKLOG_FACTOR = 16
FOLD_STEP_YIELDS = 4
"""A fold step that finds requests read since it was queued (``server.activity``) queues itself
again, behind their handlers, at most this many times in a row (then it runs: under constant
load the loop is never idle, and the fold must still progress)."""
"""Once ``FOLD_BACKLOG_FACTOR * fold_rows`` rows wait (the loop does not get to the scheduled
steps), ``observe`` folds them inline, as off the loop."""


def _row_count(rows: Any) -> int:
    """The rows a batch counts for (an empty batch still takes a place; not an array: one)."""
    try:
        return len(rows) or 1
    except TypeError:  # the fold rejects it
        return 1


TOP_DRIFTING = 5
"""Features listed under ``top_drifting`` in a snapshot."""
TOP_CATEGORY_SHIFTS = 3
"""Categories listed under a categorical feature's ``largest_shifts``."""


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
    (an empty batch counts as one; on a running event loop it schedules the fold instead);
    reads fold whatever is pending first."""

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
class PeerState:
    """Another worker's :meth:`ModelMonitor.state` of the same model version, as last published."""

    worker: str
    state: dict[str, Any]
    age_s: float
    """Seconds since it was published."""


@dataclass(frozen=True)
class _Evaluation:
    feature_psi: list[float]
    score_psi: float
    rows: int
    at: float


@dataclass
class _View:
    """What a snapshot describes: this worker's window and labels, or all workers' summed."""

    counts: Counts
    quality: dict[str, Any] | None
    """Summed quality stats (None: this monitor's own labels)."""
    oldest_age_s: float | None
    started_wall: float
    observed: dict[str, int]
    workers: list[dict[str, Any]] | None
    """Per worker: id, window rows, labels, age of its state (None: one worker)."""


@dataclass(frozen=True)
class FeedbackResult:
    """What a label was matched to."""

    matched_by: str
    """"request_id" or "row_hash"."""
    label: Label | float
    """The label as the model knows it: one of its classes, or a regressor's target."""
    predicted: Label | float
    """What the server answered for that row: the predicted class, or the predicted value."""
    replaced: bool
    """True when this label replaced an earlier label for the same row."""
    score: float | None = None
    """Binary: the positive-class score the server answered for that row."""
    predicted_positive: bool | None = None
    """Binary: whether that score was at or above the decision threshold."""
    answer: float = 0.0
    """The number remembered for the row (positive score, class index or value)."""
    truth: float = 0.0
    """The label as the quality window keeps it (binary: 1 for the positive class, multiclass:
    the class index, regression: the target)."""


class ModelMonitor:
    """Drift and quality monitor of one model version (a ``BatchObserver`` for the batcher).

    ``clock`` is a monotonic clock in seconds (injectable for tests); ``wall_clock`` gives the
    Unix time used to print timestamps (and to date a published state). ``shared``: one of
    several workers' monitors (see the module docstring): the status follows the merged view.
    """

    def __init__(
        self,
        card: ModelCard,
        params: Settings | MonitorParams | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shared: bool = False,
    ) -> None:
        if params is None:
            params = MonitorParams()
        elif isinstance(params, Settings):
            params = MonitorParams.from_settings(params)
        self.card = card
        self.params = params
        self._clock = clock
        self._wall_clock = wall_clock
        self.shared = shared
        self._lock = threading.Lock()
        self._n_features = card.input.n_features
        self._n_outputs = card.n_outputs
        self._task = task_monitor(card, params.quality_window_labels)
        # Window columns: every feature, then the answer (binary: the positive score on the
        # training score bins, then against the threshold alone; multiclass: the predicted class;
        # regression: the predicted value).
        # (A card is validated before it is served; a reference that does not match its columns
        # anyway makes every fold fail, counted in ``errors``, and never a prediction.)
        features = [
            _feature_bins(c, f)
            for c, f in zip(card.input.columns, card.reference.features, strict=False)
        ]
        edges = [e for e, _ in features] + self._task.edges
        self._window = BinnedWindow(
            edges, capacity_rows=params.drift_window_rows, max_age_s=params.drift_window_s
        )
        self._score_column = self._n_features
        self._n_columns = self._n_features + len(self._task.edges)
        self._ref_counts: list[NDArray[np.int64]] = [c for _, c in features]
        self._served = ServedRows(params.feedback_capacity, self._n_features)
        self._started = clock()
        self._started_wall = wall_clock()
        self._status: Status = "insufficient_data"
        self._status_since = self._started
        self._announced: Status = "insufficient_data"
        """The status last logged (transitions are logged against it)."""
        self._evaluated: _Evaluation | None = None
        """The last status evaluation (what a transition's log line tells)."""
        self._next_status_check = self._started + params.status_interval_s
        self._pending: list[_PendingBatch] = []
        self._pending_rows = 0
        self._folding: list[_PendingBatch] = []
        """Batches handed to the scheduled fold steps (older than ``_pending``'s)."""
        self._folding_rows = 0
        self._status_due = False
        """A status evaluation is left to the scheduled steps."""
        self._steps_on: asyncio.AbstractEventLoop | None = None
        """The event loop the fold steps are scheduled on (None: none scheduled)."""
        self._reads_seen = 0
        """``ACTIVITY.reads`` when the next fold step was queued."""
        self._yields = 0
        """Times in a row the next fold step let requests go first."""
        # Counters as of the last fold (every read folds first; so does flush()).
        self.rows_total = 0
        self.batches_total = 0
        self.rejected_batches = 0
        """Batches not observed at all (wrong shape)."""
        self.feedback_skipped_batches = 0
        """Batches binned for drift but not remembered for feedback (request counts off)."""
        self.errors = 0
        """Exceptions caught while observing or folding."""
        self.labels_from_other_workers = 0
        """Labels another worker received and forwarded here, to the row this worker served."""
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
        write into them afterwards. On a thread running an event loop, the fold due every
        ``fold_rows`` rows and the periodic status evaluation are not run here but scheduled on
        the loop, in steps of at most ``FOLD_STEP_BATCHES`` batches: they then delay neither
        the answer this call precedes nor, by more than a step, the loop's other I/O.
        """
        try:
            now = self._clock()
            n = _row_count(rows)
            with self._lock:
                self._pending.append((rows, scores, requests, now))
                self._pending_rows += n
                fold = self._pending_rows >= self.params.fold_rows
                status = not self.shared and now >= self._next_status_check
                if fold or status:
                    self._catch_up(now, fold=fold, status=status)
        except Exception as exc:  # a monitoring bug must never fail a prediction
            self.errors += 1
            self._log_once(type(exc).__name__, f"observe failed: {exc!r}", exc_info=True)

    def _catch_up(self, now: float, *, fold: bool, status: bool) -> None:
        """Fold (``fold``) and evaluate the status (``status``) now, or, on a running event
        loop, in scheduled steps (called with the lock held)."""
        loop = asyncio._get_running_loop()
        backlog = self._pending_rows + self._folding_rows
        if loop is None or backlog >= FOLD_BACKLOG_FACTOR * self.params.fold_rows:
            self._catch_up_now(now, fold=fold, status=status)
            return
        if fold:
            self._hand_over_pending()
        if status:
            self._status_due = True
            self._next_status_check = now + self.params.status_interval_s
        if self._steps_on is not loop:
            try:
                self._reads_seen = ACTIVITY.reads
                loop.call_soon(self._fold_step, loop)
            except RuntimeError:  # the loop is closed
                self._catch_up_now(now, fold=True, status=self._status_due)
                return
            self._steps_on = loop

    def _catch_up_now(self, now: float, *, fold: bool, status: bool) -> None:
        """What ``observe`` does off the loop: fold, evaluate the status, inline."""
        if fold:
            self._fold(now)
        if status:
            self._evaluate_status(now)

    def _hand_over_pending(self) -> None:
        """Move the pending batches to the end of those the fold steps fold."""
        self._folding += self._pending
        self._folding_rows += self._pending_rows
        self._pending = []
        self._pending_rows = 0

    def _fold_step(self, loop: asyncio.AbstractEventLoop) -> None:
        """A scheduled step: fold at most ``FOLD_STEP_BATCHES`` handed-over batches, oldest
        first, or when none is left, evaluate the status if due; schedule the next step while
        work is left. A step that finds nothing left (a read folded it) does nothing. A step
        that finds requests read since it was queued lets them go first (queued again, behind
        their handlers, ``FOLD_STEP_YIELDS`` times at most): at one connection the fold then
        runs between requests rather than ahead of one."""
        reads = ACTIVITY.reads
        if reads != self._reads_seen and self._yields < FOLD_STEP_YIELDS:
            self._reads_seen = reads
            self._yields += 1
            loop.call_soon(self._fold_step, loop)
            return
        self._yields = 0
        with self._lock:
            again = False
            try:
                again = self._step(self._clock())
                if again:
                    self._reads_seen = ACTIVITY.reads
                    loop.call_soon(self._fold_step, loop)
            except Exception as exc:
                again = False
                self.errors += 1
                self._log_once(type(exc).__name__, f"fold step failed: {exc!r}", exc_info=True)
            if not again and self._steps_on is loop:
                self._steps_on = None

    def _step(self, now: float) -> bool:
        """One step's work (called with the lock held); True: work is left."""
        if self._folding:
            batches = self._folding[:FOLD_STEP_BATCHES]
            del self._folding[:FOLD_STEP_BATCHES]
            self._folding_rows -= sum(_row_count(b[0]) for b in batches)
            self._fold_batches(batches, now)
            return bool(self._folding) or self._status_due
        if self._status_due:
            if len(self._pending) > FOLD_STEP_BATCHES:  # fold them in steps first
                self._hand_over_pending()
                return True
            self._evaluate_status(now)
        return False

    def observe_shadow(
        self,
        rows: NDArray[np.float32],
        scores: NDArray[np.float32],
        requests: Sequence[tuple[str, int, int]],
    ) -> None:
        """:meth:`observe` for a batch this version scored in shadow (from any thread): counted
        in its window like any other, remembered for feedback as not answered by it."""
        self.observe(rows, scores, ShadowParts(requests))

    def _evaluate_status(self, now: float) -> None:
        """Fold what is pending and evaluate the status (called with the lock held)."""
        self._next_status_check = now + self.params.status_interval_s
        self._status_due = False
        self._fold(now)
        window = self._window
        self._update_status(self._feature_psi(window), self._score_psi(window), now, window)
        self._announce()

    def check_status(self) -> Status:
        """The status, evaluated first when the periodic check is due: batches evaluate it as
        they arrive, and a watcher calling this sees it change even after traffic stopped."""
        if not self.shared:
            with self._lock:
                now = self._clock()
                if now >= self._next_status_check:
                    self._evaluate_status(now)
        return self._status

    def flush(self) -> None:
        """Fold the pending batches into the window and the feedback memory now."""
        with self._lock:
            self._fold(self._clock())

    def _fold(self, now: float) -> None:
        """Fold every batch still waiting: those handed to the fold steps, then the pending
        ones, in arrival order (called with the lock held)."""
        pending = self._pending
        if self._folding:
            pending = self._folding + pending
            self._folding = []
            self._folding_rows = 0
        self._pending = []
        self._pending_rows = 0
        self._fold_batches(pending, now)

    def _fold_batches(self, pending: list[_PendingBatch], now: float) -> None:
        """Validate batches, then bin and remember them in one vectorised pass.

        Called with the lock held. A malformed batch is rejected (counted, logged once) without
        losing the others; an unexpected error loses these batches and is counted.
        """
        if not pending:
            self._window.expire(now)
            return
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
                or scores.shape != (rows.shape[0], self._n_outputs)
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
        shadowed = _shadowed(requests_l, counts)
        return _Gathered(rows, scores, arrived, len(counts), requests, None, shadowed)

    def _gather_checked(self, pending: list[_PendingBatch]) -> _Gathered | None:
        """Batch by batch: reject malformed ones, keep the rest; None when none is left."""
        row_parts: list[NDArray[Any]] = []
        score_parts: list[NDArray[Any]] = []
        counts: list[int] = []
        arrived: list[float] = []
        remembered: list[bool] = []
        kept_requests: list[Any] = []
        requests_all: list[tuple[str, int, int]] = []
        f, k = self._n_features, self._n_outputs
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
            kept_requests.append(requests)
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
            _shadowed(kept_requests, counts),
        )

    def _add(self, batches: _Gathered, now: float) -> None:
        """Bin the gathered rows into the window, remember them for feedback, count them."""
        f = self._n_features
        total = batches.rows.shape[0]
        answers = self._task.answers(batches.scores)
        columns = np.empty((total, self._n_columns), dtype=np.float32)
        columns[:, :f] = batches.rows
        for j in range(f, self._n_columns):
            columns[:, j] = answers
        self._window.add(columns, now, arrived=batches.arrived)
        self.rows_total += total
        self.batches_total += batches.n_batches
        keep, shadowed = batches.remembered, batches.shadowed
        if keep is None:
            self._served.record(batches.rows, answers, batches.requests, shadowed)
        elif keep.any():
            self._served.record(
                batches.rows[keep],
                answers[keep],
                batches.requests,
                None if shadowed is None else shadowed[keep],
            )

    # --- feedback ----------------------------------------------------------------------------

    def feedback(
        self,
        *,
        label: Label | float,
        request_id: str | None = None,
        row: int = 0,
        row_hash: str | None = None,
        forwarded: bool = False,
        answered_only: bool = False,
    ) -> FeedbackResult:
        """Attach a true label to a served row, found by ``(request_id, row)`` or by ``row_hash``.

        ``label``: one of the model's classes as the user's own value (an int class also as a
        whole float), or a regressor's target (a finite number). Raises InvalidInput for a label
        that is not one, or when not exactly one of ``request_id`` and ``row_hash`` is given, and
        UnknownFeedbackId when the row was never served or has been forgotten (more than
        ``feedback_capacity`` rows ago). ``forwarded``: the label reached another worker first
        (counted in the snapshot's ``observed`` section). ``answered_only``: a row this version
        scored in shadow (:meth:`observe_shadow`) is not one it answered: UnknownFeedbackId, so
        that a label looked for in every version finds the one that answered.
        """
        truth = self._task.truth(label)
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
            if answered_only and self._served.shadowed(seq):
                raise UnknownFeedbackId("the row was scored in shadow by this version")
            answer = self._served.score(seq)
            ref, replaced = self._task.quality.add(answer, truth, seq, self._served.label_ref(seq))
            self._served.set_label_ref(seq, ref)
            if forwarded:
                self.labels_from_other_workers += 1
        return FeedbackResult(
            matched_by=matched_by,
            replaced=replaced,
            answer=answer,
            truth=truth,
            **self._task.feedback(answer, truth),
        )

    # --- reading -----------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Overall status as last evaluated (by ``observe``'s periodic check or a snapshot)."""
        return self._status

    @property
    def status_since(self) -> str:
        """When the status last changed (ISO 8601, UTC)."""
        return self._iso(self._status_since)

    def state(self) -> dict[str, Any]:
        """What this worker publishes for the others (JSON-ready): the window's bin totals, the
        quality window's sufficient statistics and the counters, as of now."""
        with self._lock:
            now = self._clock()
            self._fold(now)
            oldest = self._window.oldest_time()
            return {
                "sha256": self.card.onnx.sha256,
                "totals": self._window.totals.tolist(),
                "rows": self._window.rows,
                "max_rows": self.params.drift_window_rows,
                "oldest_age_s": now - oldest if oldest is not None else None,
                "started": self._started_wall,
                "quality": self._task.quality.stats(),
                "observed": self._observed(),
            }

    def snapshot(
        self, peers: Sequence[PeerState] | None = None, *, worker: str = "this"
    ) -> dict[str, Any]:
        """The monitoring state as a JSON-ready dict (shape documented in the package docstring).

        ``peers``: the other workers' states of this version; the snapshot then describes all
        workers' traffic and labels (and gains a ``workers`` section). A state that does not fit
        (another model file, another window layout) is left out and listed as such; ``worker``
        names this worker in that list.
        """
        with self._lock:
            now = self._clock()
            self._fold(now)
            view = self._own_view(now) if peers is None else self._merged_view(peers, now, worker)
            feature_psi = self._feature_psi(view.counts)
            score_psi = self._score_psi(view.counts)
            self._update_status(feature_psi, score_psi, now, view.counts)
            if not self.shared:
                self._announce()
            return self._snapshot(view, feature_psi, score_psi, now)

    def refresh_status(self, peers: Sequence[PeerState], *, announce: bool) -> None:
        """Keep a shared monitor's status current on the merged view (the publishing loop calls
        this once a second): re-evaluate it unless a snapshot (a route, ``/metrics``) did within
        ``status_interval_s``; ``announce``: log a transition (one worker does)."""
        with self._lock:
            now = self._clock()
            last = self._evaluated
            if last is None or now - last.at >= self.params.status_interval_s:
                self._fold(now)
                counts = self._merged_view(peers, now).counts
                self._update_status(self._feature_psi(counts), self._score_psi(counts), now, counts)
            if announce:
                self._announce()

    def _observed(self) -> dict[str, int]:
        observed = {
            "rows_total": self.rows_total,
            "batches_total": self.batches_total,
            "rejected_batches": self.rejected_batches,
            "feedback_skipped_batches": self.feedback_skipped_batches,
            "errors": self.errors,
            "feedback_rows_remembered": self._served.remembered,
            "feedback_capacity": self._served.capacity,
            "feedback_requests_indexed": self._served.requests_indexed,
            "feedback_hashes_indexed": self._served.hashes_indexed,
        }
        if self.shared:
            observed["labels_from_other_workers"] = self.labels_from_other_workers
        return observed

    def _own_view(self, now: float) -> _View:
        oldest = self._window.oldest_time()
        return _View(
            counts=self._window,
            quality=None,
            oldest_age_s=now - oldest if oldest is not None else None,
            started_wall=self._started_wall,
            observed=self._observed(),
            workers=None,
        )

    def _merged_view(self, peers: Sequence[PeerState], now: float, worker: str = "this") -> _View:
        own = self._own_view(now)
        totals = self._window.totals.copy()
        rows = self._window.rows
        quality = self._task.quality.stats()
        observed = dict(own.observed)
        ages = [own.oldest_age_s] if own.oldest_age_s is not None else []
        started = self._started_wall
        workers: list[dict[str, Any]] = [
            {"worker": worker, "rows": rows, "labels": quality["labels"], "state_age_s": 0.0}
        ]
        for peer in peers:
            entry: dict[str, Any] = {"worker": peer.worker}
            workers.append(entry)
            age = {"state_age_s": round(peer.age_s, 3)}
            try:
                state = peer.state
                if state["sha256"] != self.card.onnx.sha256:
                    raise ValueError("another model file")
                theirs = np.asarray(state["totals"], dtype=np.int64)
                if theirs.shape != totals.shape:
                    raise ValueError("another window layout")
                summed_quality = add_stats(quality, state["quality"])
                summed_observed = {k: observed[k] + int(state["observed"][k]) for k in observed}
                their_rows = int(state["rows"])
                their_labels = int(state["quality"]["labels"])
                their_started = float(state["started"])
                oldest = state["oldest_age_s"]
                their_age = None if oldest is None else float(oldest) + peer.age_s
            except (KeyError, TypeError, ValueError) as exc:
                entry |= {**age, "left_out": str(exc) or type(exc).__name__}
                continue
            totals += theirs
            rows += their_rows
            quality, observed = summed_quality, summed_observed
            if their_age is not None:
                ages.append(their_age)
            started = min(started, their_started)
            entry |= {"rows": their_rows, "labels": their_labels, **age}
        return _View(
            counts=WindowCounts(totals, self._window.offsets, rows),
            quality=quality,
            oldest_age_s=max(ages) if ages else None,
            started_wall=started,
            observed=observed,
            workers=workers,
        )

    def _snapshot(
        self, view: _View, feature_psi: list[float], score_psi: float, now: float
    ) -> dict[str, Any]:
        p = self.params
        counts = view.counts
        rows = counts.rows
        features = [
            self._feature_section(j, column, feature_psi[j], counts)
            for j, column in enumerate(self.card.input.columns)
        ]
        ranked = sorted(
            (j for j, v in enumerate(feature_psi) if math.isfinite(v)),
            key=lambda j: feature_psi[j],
            reverse=True,
        )
        task = self._task
        n_workers = 1 if view.workers is None else sum("rows" in w for w in view.workers)
        snap: dict[str, Any] = {
            "model": self.card.name,
            "version": self.card.version,
            "task": self.card.task,
            "status": self._status,
            "status_since": self._iso(self._status_since),
            "since": datetime.fromtimestamp(view.started_wall, UTC).isoformat(timespec="seconds"),
            "window": {
                "rows": rows,
                "seconds": round(view.oldest_age_s, 3) if view.oldest_age_s is not None else 0.0,
                "max_rows": p.drift_window_rows * n_workers,
                "max_seconds": p.drift_window_s,
                "min_rows": p.drift_min_rows,
            },
            "thresholds": {
                "psi_watch": p.psi_watch,
                "psi_drift": p.psi_drift,
                "min_rows": p.drift_min_rows,
                "decision_threshold": self.card.threshold if self.card.task == "binary" else None,
            },
            "features": features,
            "top_drifting": [
                {k: features[j][k] for k in ("name", "psi", "status")}
                for j in ranked[:TOP_DRIFTING]
            ],
            "scores": {
                "of": task.answer,
                "psi": _num(score_psi),
                "status": self._psi_status(score_psi, rows),
                **task.scores_section(counts, self._score_column, score_psi),
            },
            "quality": task.quality_section(view.quality),
            "observed": view.observed,
        }
        if view.workers is not None:
            snap["workers"] = view.workers
        return snap

    def _feature_section(
        self, j: int, column: Column, psi_value: float, counts: Counts
    ) -> dict[str, Any]:
        rows = counts.rows
        live = counts.column_counts(j)
        ref = self._ref_counts[j]
        section: dict[str, Any] = {"name": column.name, "kind": column.kind, "psi": _num(psi_value)}
        if column.kind == "categorical":
            # slots: unseen, one per category, missing
            n_ref = int(ref.sum())
            live_share = live / rows if rows else np.zeros(live.shape)
            ref_share = ref / n_ref if n_ref else np.zeros(ref.shape)
            gap = np.abs(live_share[:-1] - ref_share[:-1]) if rows else np.zeros(ref.size - 1)
            shown = [*column.categories]
            order = sorted(range(len(shown)), key=lambda i: -gap[i + 1])[:TOP_CATEGORY_SHIFTS]
            section |= {
                "ks": None,
                "ks_pvalue": None,
                "missing_rate": _num(live[-1] / rows) if rows else None,
                "unseen_rate": _num(live[0] / rows) if rows else None,
                "reference_unseen_rate": _num(ref_share[0]) if n_ref else None,
                "largest_shifts": [
                    {
                        "category": shown[i],
                        "live_share": _num(live_share[i + 1]),
                        "reference_share": _num(ref_share[i + 1]),
                    }
                    for i in order
                ]
                if rows
                else [],
            }
        else:
            distance = ks_binned(ref[:-1], live[:-1])
            section |= {
                "ks": _num(distance),
                "ks_pvalue": _num(ks_pvalue(distance, int(ref[:-1].sum()), int(live[:-1].sum()))),
                "missing_rate": _num(live[-1] / rows) if rows else None,
            }
        section["status"] = self._psi_status(psi_value, rows)
        return section

    # --- internals ---------------------------------------------------------------------------

    def _feature_psi(self, counts: Counts) -> list[float]:
        return [psi(ref, counts.column_counts(j)) for j, ref in enumerate(self._ref_counts)]

    def _score_psi(self, counts: Counts) -> float:
        return psi(self._task.ref_counts, counts.column_counts(self._score_column))

    def _psi_status(self, value: float, rows: int) -> Status:
        p = self.params
        return psi_status(
            value, rows, min_rows=p.drift_min_rows, watch=p.psi_watch, drift=p.psi_drift
        )

    def _update_status(
        self, feature_psi: list[float], score_psi: float, now: float, counts: Counts
    ) -> None:
        """Track the status of ``counts`` (and remember the evaluation for :meth:`_announce`)."""
        rows = counts.rows
        new = worst([self._psi_status(v, rows) for v in [*feature_psi, score_psi]])
        if new != self._status:
            self._status = new
            self._status_since = now
        self._evaluated = _Evaluation(feature_psi, score_psi, rows, now)

    def _announce(self) -> None:
        """Log entering and leaving drift (once per transition)."""
        old, new, last = self._announced, self._status, self._evaluated
        if new == old or last is None:
            return
        self._announced = new
        name = f"{self.card.name}/{self.card.version}"
        scope = " (all workers)" if self.shared else ""
        if new == "drift":
            drifting = sorted(
                (
                    (v, f)
                    for v, f in zip(last.feature_psi, self.card.input.feature_names, strict=True)
                    if math.isfinite(v) and v > self.params.psi_drift
                ),
                reverse=True,
            )
            logger.warning(
                "model %s entered drift over %d rows%s: %s; score PSI %.3f",
                name,
                last.rows,
                scope,
                ", ".join(f"{f} PSI {v:.3f}" for v, f in drifting) or "no single feature",
                last.score_psi,
            )
        elif old == "drift":
            logger.info("model %s left drift%s, now %s", name, scope, new)

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


def _feature_bins(column: Column, ref: FeatureReference) -> tuple[list[float], NDArray[np.int64]]:
    """A feature's window edges and reference counts (its bins, then its missing slot).

    A categorical column holds codes (-1 unseen, 0 … k-1 known): edges -0.5, 0.5, …, k-1.5 give
    one bin for unseen values, then one per category, so PSI compares the category shares and
    the unseen share together. Training rows have no unseen value (the categories were learned
    from them), so the reference's unseen share is 0, floored to PSI's epsilon (1e-4): a live
    unseen share ``u`` alone adds about ``u * ln(u / 1e-4)`` to the column's PSI, which passes
    the watch threshold (0.1) at about 2% unseen rows and the drift threshold (0.25) at about 4%,
    however stable the known categories' shares stay.
    """
    if column.kind == "categorical":
        k = len(column.categories)
        counts = ref.category_counts if ref.category_counts is not None else [0] * k
        edges = [i - 0.5 for i in range(k)]
        return edges, np.array([ref.unseen, *counts, ref.missing], dtype=np.int64)
    if ref.histogram is None:
        raise ValueError(f"reference {column.name}: a histogram is needed")
    hist = ref.histogram
    return list(hist.bin_edges), np.array([*hist.counts, ref.missing], dtype=np.int64)


def _num(value: float | np.floating[Any]) -> float | None:
    """A finite float for JSON, or None."""
    v = float(value)
    return v if math.isfinite(v) else None


__all__ = ["FeedbackResult", "ModelMonitor", "MonitorParams"]
