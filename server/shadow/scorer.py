"""The shadow's own thread: it scores copies of the primary's answered batches, off the loop.

The primary's batcher hands each answered batch to :meth:`ShadowScorer.offer` (on the event loop,
after the answers are set): a deque append, no lock and no wake-up. The thread wakes every
``GATHER_S`` while there is work, takes everything queued, scores it with the shadow's session
in runs of up to ``GROUP_ROWS`` rows (the per-call cost is paid once per run, not once per batch)
and hands rows, scores and request ids to the shadow version's monitor (thread-safe), where labels
find them as they find the primary's. After a second with nothing queued it sleeps until the next
batch.

It never slows the primary, and its cost is bounded:

- the thread runs at the lowest CPU priority (``nice 19`` for this thread only, Linux), so on a
  busy core it gets the time the server leaves idle;
- its own CPU time is held to ``max_cpu_share`` of the process's (``TABSERVE_SHADOW_CPU_SHARE``,
  measured over the last few seconds): past it, queued batches are skipped rather than scored;
- when it falls behind anyway, rows past ``max_queued_rows`` are skipped;

skipped rows are counted (the comparison is on the rows both models answered, so a sample serves
as well as every row, only more slowly). An error scoring a batch is counted and logged, and the
next batch is scored as usual.
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

from server.ratelimit import ThrottledLog

log = logging.getLogger("tabserve.shadow")

GROUP_ROWS = 64
"""Most rows in one shadow run (the CPU budget is checked before each run)."""
GATHER_S = 0.02
"""How often the thread takes what is queued (one wake-up, a few runs)."""
IDLE_S = 1.0
"""Nothing queued this long: the thread sleeps until the next batch."""
BUDGET_WINDOW_S = 2.0
"""The CPU budget is measured over windows of this length (the last one and the current)."""

Score = Callable[[np.ndarray], np.ndarray]
Deliver = Callable[[np.ndarray, np.ndarray, Sequence[tuple[str, int, int]]], None]
"""Where a shadow's scores go: rows, scores, request parts (its monitor's ``observe_shadow``)."""


@dataclass
class ScorerStats:
    rows_offered: int = 0
    rows_scored: int = 0
    rows_behind: int = 0
    """Rows skipped because the shadow was behind (its queue was full); counted on the loop."""
    rows_over_budget: int = 0
    """Rows skipped for the CPU budget; counted on the shadow's thread."""
    cpu_seconds: float = 0.0
    """CPU time of the shadow's thread."""

    @property
    def rows_skipped(self) -> int:
        """Rows offered and not scored (each counter is written by one thread only)."""
        return self.rows_behind + self.rows_over_budget

    errors: int = 0
    runs: int = 0


@dataclass(frozen=True)
class _Batch:
    score: Score
    sink: Deliver
    rows: np.ndarray
    requests: Sequence[tuple[str, int, int]]


class ShadowScorer:
    """One thread scoring every shadow's copies of its primary's batches, oldest first."""

    def __init__(self, max_queued_rows: int, max_cpu_share: float = 0.03) -> None:
        self.max_queued_rows = max(1, max_queued_rows)
        self.max_cpu_share = max_cpu_share
        self.stats = ScorerStats()
        self._queue: deque[_Batch] = deque()
        # rows queued = appended - taken; each counter is written by one thread only
        self._appended_rows = 0
        self._taken_rows = 0
        self._work = threading.Event()  # set by the first batch after the thread went idle
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tabserve-shadow", daemon=True)
        self._log = ThrottledLog(log, interval_s=10.0)
        # the CPU budget: (process, thread) CPU seconds at the start of the current window, and
        # the previous window's shares, so the budget looks at 2 to 4 seconds
        self._window: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._previous: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self._thread.start()

    def offer(
        self,
        score: Score,
        sink: Deliver,
        rows: np.ndarray,
        requests: Sequence[tuple[str, int, int]],
    ) -> None:
        """Queue a batch for the shadow (the caller must not write into ``rows`` afterwards)."""
        n = len(rows)
        stats = self.stats
        stats.rows_offered += n
        if self._closing or self.queued_rows + n > self.max_queued_rows:
            stats.rows_behind += n
            return
        self._queue.append(_Batch(score, sink, rows, requests))  # (atomic: no lock)
        self._appended_rows += n
        if not self._work.is_set():
            self._work.set()

    @property
    def queued_rows(self) -> int:
        return self._appended_rows - self._taken_rows

    def close(self, timeout_s: float = 5.0) -> None:
        """Score what is queued (up to ``timeout_s``), then stop the thread."""
        self._closing = True
        self._work.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # lowest priority, this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        idle_since = time.monotonic()
        while True:
            if not self._queue:
                if self._closing:
                    return
                if time.monotonic() - idle_since > IDLE_S:
                    self._work.clear()
                    if not self._queue and not self._closing:
                        self._work.wait()
                    idle_since = time.monotonic()
                    continue
                time.sleep(GATHER_S)
                continue
            if not self._closing:
                time.sleep(GATHER_S)  # let more batches arrive: fewer, larger runs
            for group in self._take():
                if not self._closing and self._over_budget():
                    self.stats.rows_over_budget += sum(len(b.rows) for b in group)
                else:
                    self._score(group)
            self.stats.cpu_seconds = time.thread_time()
            idle_since = time.monotonic()

    def _over_budget(self) -> bool:
        """True while this thread used more than ``max_cpu_share`` of the process's CPU time
        over the current and the previous window."""
        if self.max_cpu_share <= 0:
            return True
        process, thread, now = time.process_time(), time.thread_time(), time.monotonic()
        start_process, start_thread, started = self._window
        if now - started >= BUDGET_WINDOW_S:
            self._previous = (process - start_process, thread - start_thread)
            self._window = (process, thread, now)
            start_process, start_thread = process, thread
        spent_process = process - start_process + self._previous[0]
        spent_thread = thread - start_thread + self._previous[1]
        return spent_process > 0 and spent_thread > self.max_cpu_share * spent_process

    def _take(self) -> list[list[_Batch]]:
        """Queued batches, grouped by shadow, each group at most GROUP_ROWS rows (or one
        larger batch)."""
        groups: list[list[_Batch]] = []
        queue = self._queue
        while queue:
            batch = queue.popleft()  # (atomic: no lock)
            self._taken_rows += len(batch.rows)
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
            first.sink(rows, scores, requests)
        except Exception as exc:
            self.stats.errors += 1
            self._log(logging.ERROR, "event=shadow_failed rows=%d error=%r", len(group), exc)
