"""Micro-batching: one batcher, owning one asyncio task, per loaded model version.

How a batch forms: when the model is idle (nothing queued or running) and runs inline, a request
runs at once in its own coroutine, with no timer and no hop to another task. Otherwise its rows
join a queue and wake the batch task: requests that arrive while a batch runs, or together in one
event-loop iteration, wait, and the next batch takes all of them, up to ``max_batch_rows`` (large
requests are split across batches).
``max_delay_ms`` > 0 waits that long for a fuller batch. Per batch::

    cache.lookup(all rows)  ->  runner.infer(misses only)  ->  cache.store(misses)
    ->  resolve each request's future with exactly its rows  ->  observer.observe(batch)

Backpressure: the queue holds at most ``max_queue_rows`` rows, and no more than the model drains
before the request's deadline; past either, :meth:`Batcher.predict` raises :class:`Overloaded` (an
empty queue always admits one request, so a big request is not starved). :meth:`Batcher.admit`
makes the same refusal before a body is decoded, so refusing costs next to nothing. Each request
carries a deadline (``time.monotonic()``); one whose answer could no longer go out before it
(a batch, then the event loop's turn that sends answers) when its rows are taken fails with
:class:`DeadlineExceeded` and never runs.

Overload: while requests wait, the batch task runs batch after batch for a slice of time, then
yields the event loop once (new requests are read, admitted or refused, answers are sent). The
slice is :data:`BATCH_SHARE` times the CPU time the loop spent away, within bounds: however many
requests arrive (or are refused) per loop iteration, inference keeps most of the core, and
goodput stays near capacity instead of collapsing to one batch per iteration. (CPU time, not
wall time: on a core shared with other processes the share holds all the same.)

Lifecycle: :meth:`Batcher.start` creates the task, :meth:`Batcher.stop` refuses new work, lets the
queue drain until a timeout, cancels the task, and fails what is left with :class:`ShuttingDown`.

With ``batching=False`` every request runs alone, in its caller's coroutine, with the same
deadline, backpressure, cache and observer steps: the baseline the benchmark compares against.

The two hooks below are implemented elsewhere (``server/cache/``, ``server/monitoring/``); a hook
that raises is counted in ``tabserve_hook_errors`` and logged, and never fails a prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from server.errors import DeadlineExceeded, ModelNotReady, Overloaded, ShuttingDown
from server.metrics import ServerMetrics
from server.modelcard import ModelCard

log = logging.getLogger("tabserve.batcher")

BATCH_SHARE = 4.0
"""While requests wait, batches run for this many times the CPU time the rest of the event loop
used in its last turn: inference keeps about 4/5 of a saturated core, however many requests
each turn reads, admits or refuses."""
MIN_SLICE_S = 0.002
"""Batches run for at least this much CPU time before the batch task yields (requests waiting)."""
MAX_SLICE_S = 0.1
"""...and at most this much CPU time,"""
MAX_SLICE_WALL_S = 0.25
"""...and this much wall time: the longest the batch task holds the event loop in one go."""
_EWMA = 0.1
"""Weight of the newest sample in the drain-rate and batch-time estimates (and how fast the
recent worst turn of the event loop decays)."""

CacheMode = Literal["default", "no-cache", "no-store"]
"""Per request: ``default`` reads and fills the cache; ``no-cache`` skips the lookup but stores
the fresh rows; ``no-store`` neither reads nor stores (HTTP ``Cache-Control`` semantics)."""


class ModelRunner(Protocol):
    """What a batcher runs: a :class:`server.runner.Runner`, or a cascade of two
    (:class:`server.ladder.CascadeRunner`)."""

    card: ModelCard
    cost_us: float
    """Batch-1 cost in µs (measured at warm-up)."""
    inline: bool
    """Runs on the event loop (else in the runner's own thread)."""

    async def infer(self, rows: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class ScoreCache(Protocol):
    """Row-level score cache of one model version (implemented in ``server/cache/``)."""

    async def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows float32 [n, f] → (hit mask bool [n], scores float32 [n, n_classes] valid where
        hit)."""
        ...

    def store(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Remember freshly computed rows; must not block (schedules any remote write)."""
        ...

    def skip(self, rows: int) -> bool:
        """True when a batch of ``rows`` should run without the cache (neither looked up nor
        stored): the cache has been finding next to nothing."""
        ...


@runtime_checkable
class AnswerMemo(Protocol):
    """Whole request bodies answered before decoding (a score cache may also be one; see
    ``server.cache.memo``). The request path calls it; the batcher counts and observes."""

    def memo_token(self) -> Hashable | None:
        """The flush token to remember an answer computed from now on under (None: do not)."""
        ...

    def recall(self, route: int, body: bytes) -> tuple[np.ndarray, Any, np.ndarray] | None:
        """(rows, decoded extra, scores) remembered for a whole request body, or None."""
        ...

    def remember(
        self,
        route: int,
        body: bytes,
        answer: Callable[[], tuple[np.ndarray, Any, np.ndarray]],
        token: Hashable | None,
    ) -> None:
        """Remember the answer to a request body, computed under ``token``; ``answer()`` makes
        it, called only if the memo keeps it. Must not block."""
        ...

    def memo_hit(self, rows: int) -> None:
        """Count a request answered from the memo (after it was admitted)."""
        ...


class BatchObserver(Protocol):
    """Sees every answered batch of one model version (implemented in ``server/monitoring/``)."""

    def observe(
        self, rows: np.ndarray, scores: np.ndarray, requests: Sequence[tuple[str, int, int]]
    ) -> None:
        """After a batch is answered: all its rows, their scores, and (request_id, start_row,
        row_count) per request part in row order; ``start_row`` is the part's first row within
        its request (a large request is split across batches, not always consecutive ones)."""
        ...


@dataclass
class BatcherStats:
    """Counters of one batcher, for tests and the model's admin view (metrics have the same)."""

    batches: int = 0
    rows: int = 0
    """Rows handed to batches (hits and misses)."""
    rows_inferred: int = 0
    """Rows that went through ONNX Runtime (cache misses)."""
    largest_batch_rows: int = 0
    coalesced_batches: int = 0
    """Batches that carried rows of more than one request."""
    memo_rows: int = 0
    """Rows answered by the cache's response memo, with no batch (see :meth:`Batcher.answered`)."""
    rejected: int = 0
    expired: int = 0
    hook_errors: int = 0


class _Pending:
    """One queued request: its rows, how many are taken, and where its answer goes."""

    __slots__ = (
        "cache_mode",
        "deadline",
        "enqueued",
        "future",
        "n",
        "out",
        "request_id",
        "rows",
        "taken",
        "written",
    )

    future: asyncio.Future[np.ndarray]
    """Set when the request is queued or split (a request run at once in one part has none)."""

    def __init__(
        self, rows: np.ndarray, deadline: float, request_id: str, cache_mode: CacheMode
    ) -> None:
        self.rows = rows
        self.n = len(rows)
        self.deadline = deadline
        self.request_id = request_id
        self.cache_mode = cache_mode
        self.enqueued = time.monotonic()
        self.taken = 0
        self.written = 0
        self.out: np.ndarray | None = None


# (request, first row of the request in this batch, row count)
_Segment = tuple[_Pending, int, int]


class Batcher:
    """Queue, batch task and hooks of one model version."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        metrics: ServerMetrics,
        max_batch_rows: int,
        max_queue_rows: int = 4096,
        max_delay_ms: float = 0.0,
        batching: bool = True,
        cache: ScoreCache | None = None,
        observer: BatchObserver | None = None,
        variant: str | None = None,
        max_slice_s: float = MAX_SLICE_S,
    ) -> None:
        self.runner = runner
        self.model = runner.card.name
        self.version = runner.card.version
        self.cache = cache
        self.memo: AnswerMemo | None = cache if isinstance(cache, AnswerMemo) else None
        """The cache as a response memo, when it is one (the request path consults it)."""
        self.observer = observer
        self.max_batch_rows = max(1, max_batch_rows)
        self.max_queue_rows = max(1, max_queue_rows)
        self.max_delay_s = max(0.0, max_delay_ms / 1000.0)
        self.batching = batching
        self.stats = BatcherStats()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._inflight_rows = 0  # batching=False: rows being run by their callers
        self._current: list[_Segment] = []
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed = False  # the batch task died of an error (see _on_task_done)
        self._ran_this_tick = False
        self._drained: asyncio.Event | None = None  # set by the last batch once stop() waits
        self._batch_s = 0.0  # estimated wall time of one batch (EWMA)
        self._row_s = 0.0  # estimated wall time per row drained while requests wait (EWMA)
        self._backlog_mark: float | None = None  # last batch end that left requests waiting
        self._turn_s = 0.0  # wall time of a slice plus the loop's turn after it (recent worst)
        self.variant = variant
        self.max_slice_s = max(MIN_SLICE_S, min(MAX_SLICE_S, max_slice_s))
        """The most CPU time the batch task runs in one go (a degrading model's rungs share
        the event loop with a latency objective: a fifth of it)."""
        self._max_slice_wall_s = MAX_SLICE_WALL_S * self.max_slice_s / MAX_SLICE_S
        """The ladder variant this batcher runs (None: the model itself); its metrics carry
        the version label ``<version>/<variant>``."""
        labels = (self.model, str(self.version) if variant is None else f"{self.version}/{variant}")
        self._m_queue_wait = metrics.queue_wait.labels(*labels)
        self._m_inference = metrics.inference.labels(*labels)
        self._m_batch_rows = metrics.batch_rows.labels(*labels)
        self._m_queue_depth = metrics.queue_depth.labels(*labels)
        self._m_rejected = metrics.rejected.labels(*labels)
        self._m_expired = metrics.expired.labels(*labels)
        self._m_hook_cache = metrics.hook_errors.labels(*labels, "cache")
        self._m_hook_observer = metrics.hook_errors.labels(*labels, "observer")

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and self.batching:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"batcher-{self.model}/{self.version}"
            )
            self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """The batch task's supervisor: it ends only when :meth:`stop` cancels it. If it died of
        an error instead, refuse new work and fail the waiting requests (a 503, not a hang)."""
        if task.cancelled() or task.exception() is None:
            return
        log.error(
            "event=batcher_failed model=%s version=%d",
            self.model,
            self.version,
            exc_info=task.exception(),
        )
        self._closing = True
        self._failed = True
        self._task = None
        self._fail_waiting(self._not_ready)
        self._check_drained()

    def _fail_waiting(self, error: Callable[[], Exception]) -> int:
        """Empty the queue and the running batch; fail each request still waiting with
        ``error()``. Returns how many were failed."""
        left = [seg[0] for seg in self._current] + list(self._queue)
        self._current = []
        self._queue.clear()
        self._queued_rows = 0
        self._m_queue_depth.set(0)
        failed = 0
        for item in left:
            if not item.future.done():
                item.future.set_exception(error())
                failed += 1
        return failed

    def _not_ready(self) -> ModelNotReady:
        return ModelNotReady(f"{self.model}/{self.version} stopped serving after an internal error")

    @property
    def accepting(self) -> bool:
        return not self._closing

    @property
    def queued_rows(self) -> int:
        return self._queued_rows + self._inflight_rows

    async def stop(self, timeout_s: float) -> None:
        """Refuse new work, drain the queue for up to ``timeout_s``, then fail what is left."""
        self._closing = True
        if not self._is_idle():
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        failed = self._fail_waiting(
            lambda: ShuttingDown(f"{self.model}/{self.version} stopped before this request ran")
        )
        if failed:
            log.warning(
                "event=batcher_drain_timeout model=%s version=%d failed_requests=%d",
                self.model,
                self.version,
                failed,
            )
        self.runner.close()

    # --- submit --------------------------------------------------------------------------------

    def _is_idle(self) -> bool:
        return not (self._queue or self._current or self._inflight_rows)

    def _check_drained(self) -> None:
        if self._drained is not None and self._is_idle():
            self._drained.set()

    async def predict(
        self,
        rows: np.ndarray,
        *,
        deadline: float,
        request_id: str,
        cache_mode: CacheMode = "default",
        admitted: bool = False,
    ) -> np.ndarray:
        """Scores float32 [n, n_classes] for ``rows`` float32 [n, n_features], in row order.

        ``admitted``: the caller ran :meth:`admit` for this request with no await since, so a
        one-row request is not checked twice."""
        n = len(rows)
        if not admitted or n != 1:
            self._check_room(n, deadline, self._admit(deadline))
        # The batch task's loop (the only one its answers can come from); asking asyncio for
        # the running loop is a getpid() system call per request on Python 3.11.
        task = self._task
        loop = task.get_loop() if task is not None else asyncio.get_running_loop()
        item = _Pending(rows, deadline, request_id, cache_mode)
        if not self.batching or (n <= self.max_batch_rows and self._may_run_now(loop)):
            return await self._run_alone(item)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        item.future = future
        self._queue.append(item)
        self._queued_rows += n
        waiter = self._waiter
        # Wake the batch task when it idles (the queue was empty) or waits for a fuller batch
        # (``max_delay_ms``) that is now full.
        if (
            waiter is not None
            and not waiter.done()
            and (len(self._queue) == 1 or self._queued_rows >= self.max_batch_rows)
        ):
            waiter.set_result(None)
        return await future

    def admit(self, deadline: float) -> None:
        """Refuse a request before its body is decoded, as :meth:`predict` would refuse one row:
        shutting down, deadline passed, queue full, or queued work that outlasts the deadline.
        Under overload most requests are refused here, for the cost of a few comparisons."""
        self._check_room(1, deadline, self._admit(deadline))

    def _admit(self, deadline: float) -> float:
        """Refuse when shutting down or past the deadline; the current ``time.monotonic()``."""
        if self._closing:
            if self._failed:
                raise self._not_ready()
            raise ShuttingDown(f"{self.model}/{self.version} is shutting down")
        now = time.monotonic()
        if deadline <= now:
            self.stats.expired += 1
            self._m_expired.inc()
            raise DeadlineExceeded("the request's deadline passed before it could run")
        return now

    def _slack(self) -> float:
        """Time a request spends outside the queue, unseen by its deadline, while requests wait:
        up to one turn of the event loop before it is read, and one before its answer is sent."""
        return 2.0 * self._turn_s

    def _check_room(self, n: int, deadline: float, now: float) -> None:
        """Refuse ``n`` more rows when the queue cannot take them, or when the rows already
        waiting take longer to drain (at the measured rate) than the deadline leaves: such a
        request would only expire in the queue, after holding a place others could use."""
        pending = self._queued_rows + self._inflight_rows
        if not pending:
            return
        if pending + n > self.max_queue_rows:
            detail = f"has {pending} rows queued (limit {self.max_queue_rows})"
        elif now + pending * self._row_s + self._slack() > deadline:
            wait_ms = (pending * self._row_s + self._slack()) * 1000
            detail = f"cannot reach this request before its deadline (~{wait_ms:.0f} ms queued)"
        else:
            return
        self.stats.rejected += 1
        self._m_rejected.inc()
        raise Overloaded(f"{self.model}/{self.version} {detail}; retry later", retry_after=1.0)

    def wait_s(self, n: int) -> float:
        """Estimated seconds from now until ``n`` more rows would be answered: the work already
        waiting (:meth:`backlog_s`) and the rows' own at the same rate, plus the event loop's
        turns; just the rows' own cost when nothing waits."""
        backlog = self.backlog_s()
        if not backlog:
            return n * self.runner.cost_us * 1e-6
        return backlog + n * self._drain_row_s() + self._slack()

    def backlog_s(self) -> float:
        """Estimated seconds of work already waiting or running: the rows at the measured drain
        rate (the batch-1 cost until one is measured)."""
        pending = self._queued_rows + self._inflight_rows
        return pending * self._drain_row_s() if pending else 0.0

    def _drain_row_s(self) -> float:
        return self._row_s or self.runner.cost_us * 1e-6

    def answered(
        self, rows: np.ndarray, scores: np.ndarray, *, deadline: float, request_id: str
    ) -> None:
        """A request the cache answered whole, with no batch (the response memo): admitted as
        :meth:`predict` admits (shutdown, deadline: same errors), then counted and observed."""
        self._admit(deadline)
        self.stats.memo_rows += len(rows)
        if self.memo is not None:
            try:
                self.memo.memo_hit(len(rows))
            except Exception:
                self.hook_failed("memo_failed")
        if self.observer is not None:
            self._observe(rows, scores, [(request_id, 0, len(rows))])

    def _may_run_now(self, loop: asyncio.AbstractEventLoop) -> bool:
        """The idle fast path: an inline model with nothing queued or running, and no other
        request run this way in the current event-loop iteration, runs in its caller's coroutine
        (no hop through the batch task). A second request in the same iteration means several
        arrived together: it and the rest queue, and the batch task coalesces them."""
        if (
            self._ran_this_tick
            or self.max_delay_s > 0  # asked to wait for fuller batches
            or self._queue
            or self._current
            or self._inflight_rows
            or not self.runner.inline
        ):
            return False
        self._ran_this_tick = True
        loop.call_soon(self._new_tick)
        return True

    def _new_tick(self) -> None:
        self._ran_this_tick = False

    async def _run_alone(self, item: _Pending) -> np.ndarray:
        self._inflight_rows += item.n
        try:
            if item.n <= self.max_batch_rows:
                item.taken = item.n
                return await self._process_one(item)
            item.future = asyncio.get_running_loop().create_future()
            for start in range(0, item.n, self.max_batch_rows):
                if start:
                    await asyncio.sleep(0)  # an inline run: let other requests have a turn
                if item.future.done():  # a part failed: the rest would only fail again
                    break
                k = min(self.max_batch_rows, item.n - start)
                item.taken = start + k
                await self._process([(item, start, k)])
        finally:
            self._inflight_rows -= item.n
            self._check_drained()
        return item.future.result()

    # --- the batch task ------------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        away = 0.0  # CPU time the rest of the event loop used between two slices of batches
        resumed: float | None = None  # the thread's CPU time when the batch task last resumed
        while True:
            if not self._queue:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                away, resumed = 0.0, None
                self._turn_s = 0.0  # the queue emptied: answers go out at once again
                continue
            if self.max_delay_s > 0 and self._queued_rows < self.max_batch_rows:
                wait = min(self.max_delay_s, self._queue[0].deadline - time.monotonic())
                if wait > 0:
                    self._waiter = loop.create_future()  # set early once the batch is full
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._waiter, wait)
                    self._waiter = None
                    resumed = None
            budget = min(self.max_slice_s, max(MIN_SLICE_S, BATCH_SHARE * away))
            began = time.monotonic()
            await self._run_slice(budget, resumed)
            if self._queue:
                # Let finished responses go out and new requests be read (first yield), then
                # those requests be admitted or refused (second: their tasks were scheduled
                # after this one's) before the next slice.
                yielded = time.thread_time()
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                resumed = time.thread_time()
                away = resumed - yielded
                # A recent worst, not an average: it bounds how late answers go out.
                self._turn_s = max(time.monotonic() - began, self._turn_s * (1 - _EWMA))

    async def _run_slice(self, budget_s: float, cpu_start: float | None) -> None:
        """Batch after batch, until the queue is empty or the event loop's thread has used
        ``budget_s`` of CPU time since ``cpu_start`` (its ``time.thread_time()``; None: measure
        wall time, never less than CPU time), or :data:`MAX_SLICE_WALL_S` have passed; with
        ``max_delay_ms``, until no full batch is left. Measures the drain rate as it goes."""
        start = time.monotonic()
        while True:
            batch = self._take()
            if batch:
                self._current = batch
                began = time.monotonic()
                await self._process(batch)
                self._current = []  # (kept when this raises: stop() or the supervisor fails it)
                now = time.monotonic()
                self._batch_s += _EWMA * (now - began - self._batch_s)
                mark = self._backlog_mark
                if mark is not None:
                    # Wall time per row while requests wait, the loop's turns included.
                    sample = (now - mark) / sum(k for _, _, k in batch)
                    self._row_s += _EWMA * (sample - self._row_s) if self._row_s else sample
                self._backlog_mark = now if self._queue else None
            else:
                now = time.monotonic()
            self._check_drained()
            if not self._queue or (
                self.max_delay_s > 0 and self._queued_rows < self.max_batch_rows
            ):
                return
            # CPU time never exceeds wall time: the thread's clock (a system call) is read
            # only once the wall clock says the budget may be spent.
            elapsed = now - start
            if elapsed >= budget_s and (
                cpu_start is None
                or elapsed >= self._max_slice_wall_s
                or time.thread_time() - cpu_start >= budget_s
            ):
                return

    def _take(self) -> list[_Segment]:
        """Up to ``max_batch_rows`` rows from the head of the queue; expired requests fail here."""
        batch: list[_Segment] = []
        room = self.max_batch_rows
        late = time.monotonic() + self._batch_s + self._slack()
        queue = self._queue
        while queue and room > 0:
            item = queue[0]
            # A request whose answer could not go out before its deadline (a batch, then the
            # loop's turns) is failed unrun.
            if item.taken == 0 and (item.deadline <= late or item.future.done()):
                queue.popleft()
                self._queued_rows -= item.n
                if not item.future.done():  # (done: the caller went away)
                    self.stats.expired += 1
                    self._m_expired.inc()
                    item.future.set_exception(
                        DeadlineExceeded("the request's deadline passed while it was queued")
                    )
                continue
            k = min(room, item.n - item.taken)
            batch.append((item, item.taken, k))
            item.taken += k
            room -= k
            self._queued_rows -= k
            if item.taken == item.n:
                queue.popleft()
        self._m_queue_depth.set(self._queued_rows)
        return batch

    async def _process_one(self, item: _Pending) -> np.ndarray:
        """:meth:`_process` for one request that fits one run, answered by returning the scores
        (no batch list, no future to resolve and read back: measured ~2 us less per request on
        the idle fast path and with batching off)."""
        rows = item.rows
        self._m_queue_wait.observe(time.monotonic() - item.enqueued)
        try:
            scores = await self._scores(rows, [(item, 0, item.n)])
        except Exception:
            log.exception(
                "event=inference_failed model=%s version=%d rows=%d",
                self.model,
                self.version,
                item.n,
            )
            raise
        self._count_batch(item.n, 1)
        if self.observer is not None:
            self._observe(rows, scores, [(item.request_id, 0, item.n)])
        return scores

    def _count_batch(self, n: int, requests: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += n
        if n > stats.largest_batch_rows:
            stats.largest_batch_rows = n
        if requests > 1:
            stats.coalesced_batches += 1
        self._m_batch_rows.observe(n)

    def _observe(
        self, rows: np.ndarray, scores: np.ndarray, requests: list[tuple[str, int, int]]
    ) -> None:
        assert self.observer is not None
        try:
            self.observer.observe(rows, scores, requests)
        except Exception:
            self.stats.hook_errors += 1
            self._m_hook_observer.inc()
            log.exception("event=observer_failed model=%s version=%d", self.model, self.version)

    async def _process(self, batch: list[_Segment]) -> None:
        """Cache lookup, inference of the misses, cache fill, answers, observation."""
        first, start0, k0 = batch[0]
        if len(batch) == 1 and k0 == first.n:
            rows = first.rows
        elif len(batch) == 1:
            rows = first.rows[start0 : start0 + k0]
        else:
            rows = np.concatenate([item.rows[s : s + k] for item, s, k in batch])
        n = len(rows)
        self._m_queue_wait.observe(time.monotonic() - first.enqueued)
        try:
            scores = await self._scores(rows, batch)
        except Exception as exc:
            log.exception(
                "event=inference_failed model=%s version=%d rows=%d", self.model, self.version, n
            )
            for item, _, _ in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._count_batch(n, len(batch))
        offset = 0
        for item, start, k in batch:
            if item.future.done():
                offset += k
                continue
            if start == 0 and k == item.n:
                item.future.set_result(scores[offset : offset + k])
            else:
                if item.out is None:
                    item.out = np.empty((item.n, scores.shape[1]), dtype=np.float32)
                item.out[start : start + k] = scores[offset : offset + k]
                item.written += k
                if item.written == item.n:
                    item.future.set_result(item.out)
            offset += k
        if self.observer is not None:
            self._observe(rows, scores, [(item.request_id, s, k) for item, s, k in batch])

    async def _scores(self, rows: np.ndarray, batch: list[_Segment]) -> np.ndarray:
        cache = self.cache
        if cache is None:
            return await self._infer(rows)
        try:
            skip = cache.skip(len(rows))
        except Exception:
            self.hook_failed("cache_skip_failed")
            skip = False
        if skip:
            return await self._infer(rows)
        if len(batch) == 1:
            return await self._scores_of_one(cache, rows, batch[0][0].cache_mode)
        modes = {item.cache_mode for item, _, _ in batch}
        if modes == {"default"}:
            readable = None  # every row may be read from the cache
        else:
            readable = np.concatenate(
                [np.full(k, item.cache_mode == "default") for item, _, k in batch]
            )
        hit = np.zeros(len(rows), dtype=bool)
        cached: np.ndarray | None = None
        if readable is None or readable.any():
            try:
                lookup_rows = rows if readable is None else rows[readable]
                lookup_hit, lookup_scores = await cache.lookup(lookup_rows)
                if readable is None:
                    hit, cached = lookup_hit, lookup_scores
                else:
                    hit[readable] = lookup_hit
                    cached = np.zeros((len(rows), lookup_scores.shape[1]), dtype=np.float32)
                    cached[readable] = lookup_scores
            except Exception:
                self.hook_failed("cache_lookup_failed")
                hit = np.zeros(len(rows), dtype=bool)
                cached = None
        if cached is None or not hit.any():
            scores = await self._infer(rows)
            fresh = np.ones(len(rows), dtype=bool)
        elif hit.all():
            return cached
        else:
            fresh = ~hit
            scores = cached.copy()
            scores[fresh] = await self._infer(np.ascontiguousarray(rows[fresh]))
        storable = fresh
        if "no-store" in modes:
            storable = fresh & np.concatenate(
                [np.full(k, item.cache_mode != "no-store") for item, _, k in batch]
            )
        if storable.any():
            try:
                if storable.all():
                    cache.store(rows, scores)
                else:
                    cache.store(rows[storable], scores[storable])
            except Exception:
                self.hook_failed("cache_store_failed")
        return scores

    async def _scores_of_one(
        self, cache: ScoreCache, rows: np.ndarray, mode: CacheMode
    ) -> np.ndarray:
        """:meth:`_scores` for a batch of one request (one cache mode): the same steps without
        the per-row mode masks and their numpy calls (the common case at low concurrency)."""
        if mode == "no-store":
            return await self._infer(rows)
        hit: np.ndarray | None = None
        cached: np.ndarray | None = None
        if mode == "default":
            try:
                hit, cached = await cache.lookup(rows)
            except Exception:
                self.hook_failed("cache_lookup_failed")
        if hit is None or cached is None or not hit.any():
            scores = await self._infer(rows)
            fresh_rows, fresh_scores = rows, scores
        elif hit.all():
            return cached
        else:
            fresh = ~hit
            fresh_rows = np.ascontiguousarray(rows[fresh])
            fresh_scores = await self._infer(fresh_rows)
            scores = cached.copy()
            scores[fresh] = fresh_scores
        try:
            cache.store(fresh_rows, fresh_scores)
        except Exception:
            self.hook_failed("cache_store_failed")
        return scores

    def hook_failed(self, event: str) -> None:
        """Count and log a failing cache hook (it never fails a prediction)."""
        self.stats.hook_errors += 1
        self._m_hook_cache.inc()
        log.exception("event=%s model=%s version=%d", event, self.model, self.version)

    async def _infer(self, rows: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        scores = await self.runner.infer(rows)
        self._m_inference.observe(time.perf_counter() - start)
        self.stats.rows_inferred += len(rows)
        return scores
