"""The shadow's own thread: it scores copies of the primary's answered batches, off the loop.

The primary's batcher hands each answered batch to :meth:`ShadowScorer.offer` (on the event loop,
after the answers are set): a deque append, nothing more. The thread wakes, waits a few
milliseconds so that several batches run as one ONNX Runtime call (the per-call cost is paid
once per up to ``GROUP_ROWS`` rows, not once per batch), scores them with the shadow's session
and hands rows, scores and request ids to the shadow version's monitor (thread-safe), where
labels find them as they find the primary's.

It never slows the primary: the thread runs at the lowest CPU priority (``nice 19`` for this
thread only, Linux), so on a busy core it gets the time the server leaves idle; when it falls
behind, rows past ``max_queued_rows`` are skipped and counted, never queued without bound; an
error scoring a batch is counted and logged, and the next batch is scored as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from server.batcher import BatchObserver
from server.ratelimit import ThrottledLog

log = logging.getLogger("tabserve.shadow")

GROUP_ROWS = 256
"""Most rows in one shadow run."""
GATHER_S = 0.005
"""How long the woken thread waits for more batches before a run."""

Score = Callable[[np.ndarray], np.ndarray]


@dataclass
class ScorerStats:
    rows_offered: int = 0
    rows_scored: int = 0
    rows_skipped: int = 0
    """Rows the shadow had no room for (it was behind)."""
    errors: int = 0
    runs: int = 0


@dataclass(frozen=True)
class _Batch:
    score: Score
    sink: BatchObserver
    rows: np.ndarray
    requests: Sequence[tuple[str, int, int]]


class ShadowScorer:
    """One thread scoring every shadow's copies of its primary's batches, oldest first."""

    def __init__(self, max_queued_rows: int) -> None:
        self.max_queued_rows = max(1, max_queued_rows)
        self.stats = ScorerStats()
        self._queue: deque[_Batch] = deque()
        self._queued_rows = 0
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tabserve-shadow", daemon=True)
        self._log = ThrottledLog(log, interval_s=10.0)

    def start(self) -> None:
        self._thread.start()

    def offer(
        self,
        score: Score,
        sink: BatchObserver,
        rows: np.ndarray,
        requests: Sequence[tuple[str, int, int]],
    ) -> None:
        """Queue a batch for the shadow (the caller must not write into ``rows`` afterwards)."""
        n = len(rows)
        stats = self.stats
        stats.rows_offered += n
        if self._closing or self._queued_rows + n > self.max_queued_rows:
            stats.rows_skipped += n
            return
        with self._wake:
            self._queue.append(_Batch(score, sink, rows, requests))
            self._queued_rows += n
            if len(self._queue) == 1:
                self._wake.notify()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def close(self, timeout_s: float = 5.0) -> None:
        """Score what is queued (up to ``timeout_s``), then stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # lowest priority, this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return  # closing, nothing left
            if not self._closing:
                time.sleep(GATHER_S)  # let a few more batches arrive: one run for all of them
            for group in self._take():
                self._score(group)

    def _take(self) -> list[list[_Batch]]:
        """Queued batches, grouped by shadow, each group at most GROUP_ROWS rows (or one
        larger batch)."""
        groups: list[list[_Batch]] = []
        with self._wake:
            while self._queue:
                batch = self._queue.popleft()
                self._queued_rows -= len(batch.rows)
                last = groups[-1] if groups else None
                if (
                    last is not None
                    and last[0].score is batch.score
                    and sum(len(b.rows) for b in last) + len(batch.rows) <= GROUP_ROWS
                ):
                    last.append(batch)
                else:
                    groups.append([batch])
        return groups

    def _score(self, group: list[_Batch]) -> None:
        first = group[0]
        try:
            rows = first.rows if len(group) == 1 else np.concatenate([b.rows for b in group])
            scores = first.score(rows)
            requests = [part for b in group for part in b.requests]
            self.stats.runs += 1
            self.stats.rows_scored += len(rows)
            first.sink.observe(rows, scores, requests)
        except Exception as exc:
            self.stats.errors += 1
            self._log(logging.ERROR, "event=shadow_failed rows=%d error=%r", len(group), exc)
