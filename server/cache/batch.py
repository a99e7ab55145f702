"""The score cache one model version's batcher calls: one lookup and one store per batch.

:class:`ModelScoreCache` implements the batcher's ``ScoreCache`` protocol::

    hit, scores = await cache.lookup(rows)     # rows float32 [n, f]
    ... run the model on rows[~hit] only ...
    cache.store(rows[~hit], computed)          # synchronous; the Redis write runs in background

``lookup`` hashes every row, drops duplicate rows, asks memory and then (one MGET) Redis for the
memory misses, and returns a hit mask and the scores of the hits. It does not suspend when memory
answers every row (or Redis is not asked), except on a model's first lookup, which reads its
shared flush generation. ``store`` writes memory synchronously, so the very next batch
hits, and schedules one pipelined Redis write that never delays the response; this object owns
those tasks (bounded by ``max_pending_writes``; beyond it writes are dropped and counted) and
``close()`` waits for them briefly, then cancels what is left.

Cache-Control, per request (``server.batcher.CacheMode``): the batcher filters rows, the cache
needs no flag.

* ``default``: the request's rows go to ``lookup`` and its computed rows to ``store``.
* ``no-cache``: its rows skip ``lookup`` (always computed) but go to ``store``: the entry is
  refreshed.
* ``no-store``: its rows skip both.

So the batcher calls ``lookup(rows[reads])`` with ``reads`` = rows of ``default`` requests, and
``store(rows[computed & writes], scores[...])`` with ``writes`` = rows of requests not
``no-store``.

Per model, Redis can be skipped when it cannot pay (``auto_skip_remote``, from the setting
``cache_redis_auto_skip``): a batch asks Redis only if computing its memory misses would cost more
than one round trip (:func:`redis_min_rows`); a model for which no batch of ``max_batch_rows``
qualifies neither reads nor writes Redis. ``python -m loadtests.bench.cache_costs`` gives the
numbers.

Identical rows in one batch share one key and one cache read; the batcher may still compute
duplicates that miss, but the synchronous memory write makes the next batch hit them. When there
is no memory tier, rows whose Redis write is still in flight are answered from that write.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import numpy as np

from server.cache.base import Outcome
from server.cache.bypass import Bypass
from server.cache.keys import namespace, row_keys
from server.cache.memo import Answer, ResponseMemo
from server.cache.metrics import MEMORY, REDIS, RESPONSE
from server.cache.tiered import TieredCache
from server.modelcard import ModelCard

log = logging.getLogger(__name__)


_NOTHING: tuple[None, int, list[bytes]] = (None, -1, [])


class ModelScoreCache:
    def __init__(
        self,
        card: ModelCard,
        cache: TieredCache,
        ttl_s: float,
        *,
        use_remote: bool = True,
        auto_skip_remote: bool = False,
        max_batch_rows: int,
        max_pending_writes: int = 32,
        memo_entries: int = 0,
        memo_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive (a TTL of 0 means: build no cache)")
        self.card = card
        self.model = card.name
        self.ttl_s = ttl_s
        self.use_remote = use_remote and cache.remote is not None
        self.auto_skip_remote = auto_skip_remote
        self.max_batch_rows = max_batch_rows
        self.max_pending_writes = max_pending_writes
        self._cache = cache
        self._n_classes = card.n_outputs
        self._value_bytes = self._n_classes * 4
        self._zero_row = bytes(self._value_bytes)
        self._prefix_gen: tuple[int, bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: tuple[np.ndarray | None, int, list[bytes]] = _NOTHING
        self._inflight: dict[bytes, bytes] = {}
        self._closed = False
        self.memo: ResponseMemo | None = None
        """Whole request bodies answered before decoding (``server.cache.memo``); None: off."""
        if memo_entries > 0 and memo_bytes > 0:
            generations, model = cache.generations, card.name
            self.memo = ResponseMemo(
                memo_entries, memo_bytes, ttl_s, lambda: generations.memo_token(model)
            )
        self.bypass = Bypass()
        """Skips the cache while its recent lookups find next to nothing (``bypass.py``)."""
        self.hits = 0
        """Rows answered from the cache (either tier)."""
        self.lookups = 0
        """Rows looked up."""
        metrics = cache.metrics
        if metrics is not None:
            self._m_hits = {t: metrics.hits.labels(self.model, t) for t in (MEMORY, REDIS)}
            self._m_misses = {t: metrics.misses.labels(self.model, t) for t in (MEMORY, REDIS)}
            self._m_memo_hits = metrics.hits.labels(self.model, RESPONSE)
            self._m_written_memory = metrics.written_bytes.labels(self.model, MEMORY)
            self._m_bypassed = metrics.bypassed.labels(self.model)
        self._metrics = metrics

    @property
    def hit_ratio(self) -> float | None:
        """Share of looked-up rows answered from the cache; None before any lookup."""
        return self.hits / self.lookups if self.lookups else None

    @property
    def pending_writes(self) -> int:
        return len(self._tasks)

    def remote_min_rows(self) -> int | None:
        """Fewest memory misses in a batch for which asking Redis is worth it; None: never.

        Without ``auto_skip_remote`` that is 1. With it, Redis is asked only when computing the
        misses would cost more than one round trip (model.json's measured cost against the
        moving average of MGET round trips), i.e. only when a Redis hit can pay at all.
        """
        remote = self._cache.remote
        if not self.use_remote or remote is None:
            return None
        if not self.auto_skip_remote:
            return 1
        cost = self.card.cost
        rows = redis_min_rows(cost.us_batch1, cost.us_per_row_batch64, remote.rtt_us)
        return rows if rows <= self.max_batch_rows else None

    def describe(self) -> dict[str, object]:
        """For the model's admin view: policy and hit ratio (cheap)."""
        min_rows = self.remote_min_rows()
        if not self.use_remote:
            redis = "off"
        else:
            redis = "on" if min_rows is not None else "skipped: inference is cheaper than a trip"
        tiers = [RESPONSE] if self.memo is not None else []
        if self._cache.memory is not None:
            tiers.append(MEMORY)
        if self.use_remote:
            tiers.append(REDIS)
        return {
            "tiers": tiers,
            "ttl_s": self.ttl_s,
            "hit_ratio": self.hit_ratio,
            "rows_looked_up": self.lookups,
            "rows_hit": self.hits,
            "redis": redis,
            "redis_min_rows": min_rows,
            "bypassed": self.bypass.active,
            "rows_bypassed": self.bypass.rows_bypassed,
            # sizes against bounds: the memo is this version's, the memory tier the process's
            "memo": self.memo.describe() if self.memo is not None else None,
            "memory": self._cache.memory.describe() if self._cache.memory is not None else None,
        }

    # --- the response memo (the batcher's AnswerMemo protocol) --------------------------------

    def memo_token(self) -> Hashable | None:
        """The flush token to remember an answer computed from now on under; None: do not."""
        return None if self.memo is None else self.memo.token()

    def recall(self, route: int, body: bytes) -> Answer | None:
        """The response memo's answer for a whole request body, or None."""
        return None if self.memo is None else self.memo.get(route, body)

    def remember(
        self,
        route: int,
        body: bytes,
        answer: Answer | Callable[[], Answer],
        token: Hashable | None,
    ) -> None:
        """Give the response memo an answer computed under ``token`` (see :meth:`memo_token`)."""
        if self.memo is not None:
            self.memo.put(route, body, answer, token)

    def memo_hit(self, rows: int) -> None:
        """Count a request answered by the memo (once admitted): its rows are cache hits."""
        self.lookups += rows
        self.hits += rows
        if self._metrics is not None:
            self._m_memo_hits.inc(rows)

    def skip(self, rows: int) -> bool:
        """Whether the batcher should run a batch of ``rows`` without the cache (bypassed)."""
        if not self.bypass.skip(rows):
            return False
        if self._metrics is not None:
            self._m_bypassed.inc(rows)
        return True

    def _prefix(self, generation: int) -> bytes:
        cached = self._prefix_gen
        if cached is None or cached[0] != generation:
            cached = self._prefix_gen = (generation, namespace(self.card, generation))
        return cached[1]

    async def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [n, f] → (hit mask bool [n], scores float32 [n, n_classes], valid where hit)."""
        n = rows.shape[0]
        if n == 0:
            return np.zeros(0, dtype=bool), np.zeros((0, self._n_classes), dtype=np.float32)
        generation = await self._cache.generations.refresh(self.model)
        keys = row_keys(self._prefix(generation), rows)
        # The batcher stores the rows that missed right after computing them, usually this very
        # array: its keys are kept to be reused then (hashing is most of a one-row miss's cost).
        self._last = (rows, generation, keys)
        slots = dict.fromkeys(keys)
        inverse: np.ndarray | None = None
        if len(slots) < n:  # duplicate rows: look each distinct row up once
            unique = list(slots)
            index = {key: i for i, key in enumerate(unique)}
            inverse = np.fromiter((index[k] for k in keys), dtype=np.intp, count=n)
        else:
            unique = keys
        min_rows = self.remote_min_rows()
        fetch = await self._cache.fetch(
            unique,
            use_remote=min_rows is not None,
            remote_min_keys=min_rows or 1,
            promote_ttl_s=self.ttl_s,
        )
        values = fetch.values
        if self._inflight:
            for i, value in enumerate(values):
                if value is None:
                    values[i] = self._inflight.get(unique[i])
        unique_hit, unique_scores, found = self._decode(values)
        if inverse is None:
            hit, scores = unique_hit, unique_scores
        else:
            hit, scores = unique_hit[inverse], unique_scores[inverse]
            found = int(np.count_nonzero(hit)) if found else 0
        self.lookups += n
        self.hits += found
        self.bypass.record(n, found)
        self._count_lookup(
            len(unique),
            fetch.memory_hits,
            fetch.remote_asked,
            fetch.remote_hits,
            fetch.remote_outcome,
        )
        return hit, scores

    def _decode(self, values: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, int]:
        """Hit mask, scores [k, n_classes] (writable, zero where missed) and the number of hits,
        from cached bytes."""
        size, k = self._value_bytes, len(values)
        found = [v is not None and len(v) == size for v in values]
        n_found = found.count(True)
        if n_found == 0:
            return np.zeros(k, dtype=bool), np.zeros((k, self._n_classes), dtype=np.float32), 0
        if n_found == k:
            hit = np.ones(k, dtype=bool)
            raw = b"".join(values)  # type: ignore[arg-type]  # all bytes when all were found
        else:
            hit = np.array(found, dtype=bool)
            zero = self._zero_row
            pairs = zip(values, found, strict=True)
            raw = b"".join([v if ok and v is not None else zero for v, ok in pairs])
        scores = np.frombuffer(bytearray(raw), dtype=np.float32).reshape(k, self._n_classes)
        return hit, scores, n_found

    def store(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Remember freshly computed rows; never blocks (the Redis write is a background task)."""
        n = rows.shape[0]
        if n == 0:
            return
        if scores.shape != (n, self._n_classes):
            raise ValueError(f"scores shape {scores.shape} does not match {(n, self._n_classes)}")
        generation = self._cache.generations.current(self.model)
        last_rows, last_generation, keys = self._last
        if last_rows is not rows or last_generation != generation:
            keys = row_keys(self._prefix(generation), rows)
        self._last = _NOTHING
        raw = np.ascontiguousarray(scores, dtype=np.float32).tobytes()
        size = self._value_bytes
        items = [(key, raw[i * size : (i + 1) * size]) for i, key in enumerate(keys)]
        written = sum(len(k) for k in keys) + len(raw)
        if self._cache.memory is not None:
            self._cache.store_memory(items, self.ttl_s)
            if self._metrics is not None:
                self._m_written_memory.inc(written)
        if self._closed or self.remote_min_rows() is None:
            return  # no Redis, or no batch could ever be answered from it profitably
        if len(self._tasks) >= self.max_pending_writes:
            if self._metrics is not None:
                self._metrics.skipped.labels(self.model, REDIS, "set").inc()
            return
        if self._cache.memory is None:
            self._inflight.update(items)
        task = asyncio.create_task(self._write_remote(items, written))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Stop taking writes; wait up to ``timeout_s`` for pending ones, cancel the rest."""
        self._closed = True
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("cache %s: cancelled %d unfinished Redis writes", self.model, len(late))
            await asyncio.gather(*late, return_exceptions=True)

    async def _write_remote(self, items: list[tuple[bytes, bytes]], written: int) -> None:
        try:
            outcome = await self._cache.store_remote(items, self.ttl_s)
        finally:
            if self._inflight:
                for key, _ in items:
                    self._inflight.pop(key, None)
        if self._metrics is None:
            return
        if outcome is Outcome.OK:
            self._metrics.written_bytes.labels(self.model, REDIS).inc(written)
        else:
            self._count_failure(outcome, "set")

    def _count_lookup(
        self,
        asked: int,
        memory_hits: int,
        remote_asked: int,
        remote_hits: int,
        remote_outcome: Outcome | None,
    ) -> None:
        if self._metrics is None:
            return
        if self._cache.memory is not None:
            if memory_hits:
                self._m_hits[MEMORY].inc(memory_hits)
            if asked > memory_hits:
                self._m_misses[MEMORY].inc(asked - memory_hits)
        if remote_outcome is not None:
            if remote_hits:
                self._m_hits[REDIS].inc(remote_hits)
            if remote_asked > remote_hits:
                self._m_misses[REDIS].inc(remote_asked - remote_hits)
            if remote_outcome is not Outcome.OK:
                self._count_failure(remote_outcome, "get")

    def _count_failure(self, outcome: Outcome, op: str) -> None:
        assert self._metrics is not None
        counter = {
            Outcome.ERROR: self._metrics.errors,
            Outcome.TIMEOUT: self._metrics.timeouts,
            Outcome.SKIPPED: self._metrics.skipped,
        }.get(outcome)
        if counter is not None:
            counter.labels(self.model, REDIS, op).inc()


def redis_min_rows(us_batch1: float, us_per_row: float, rtt_us: float) -> int:
    """Smallest k with inference(k) > one Redis round trip, inference(k) ≈ b1 + (k - 1)·r.

    An upper bound on what a Redis lookup of k rows can save (every one a hit), so skipping
    below it never skips a lookup that could have paid.
    """
    if us_batch1 > rtt_us:
        return 1
    if us_per_row <= 0:
        return sys.maxsize
    return math.floor((rtt_us - us_batch1) / us_per_row) + 2


if TYPE_CHECKING:
    from server.batcher import AnswerMemo, ScoreCache

    def _implements_the_batchers_protocol(cache: ModelScoreCache) -> ScoreCache:
        return cache  # mypy checks ModelScoreCache against server.batcher.ScoreCache

    def _implements_the_memo_protocol(cache: ModelScoreCache) -> AnswerMemo:
        return cache
