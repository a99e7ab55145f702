"""The response memo: a repeated request body answered before it is even decoded.

The row cache (``server.cache.batch``) saves the model's run, but a hit still pays the request
path around it: decoding the JSON, a trip through the batcher, hashing every row. When the same
client sends the same body again -- the same transaction scored twice, a retry -- the exact bytes
repeat, and the memo answers them from a dict keyed by the body itself: one hash of the bytes
(Python's, with a full byte comparison on a match, so two different bodies never share an
answer) and no decode. The answer is re-encoded per request (its request id differs), and the
request is still admitted (deadline, shutdown) and observed by monitoring like any other.

A body is remembered the second time it is answered, not the first: the first time only its hash
goes into a bounded "seen" set (a doorkeeper, as in TinyLFU caches). Traffic that never repeats
then costs a set insert per request instead of an entry (~1 KB of fresh memory each, which
measurably slowed everything else on a miss); a body that repeats is remembered on its second
answer and answered from here from its third.

Scope and bounds, one memo per cached model version (so the model's name, version and ONNX file
are implied): bodies up to ``MAX_BODY_BYTES``, ``capacity`` entries, least recently used evicted
first, each entry valid for the model's cache TTL and only under the flush generation it was
filled in (a flush, here or in another worker, empties it; see ``server.cache.generations``).
Different spellings of the same rows (``1`` and ``1.0``, other key orders or spacing) are
different bodies: they miss here and meet in the row cache, whose keys are canonical.
Memory: about 1 KB an entry for a one-row body of 24 features (the body, its rows, the scores),
so 10,000 entries hold ~10 MB per model version.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_BODY_BYTES = 8 * 1024
"""Larger bodies are not remembered (big requests rarely repeat byte for byte)."""

Answer = tuple[np.ndarray, Any, np.ndarray]
"""(rows float32 [n, f], what the route's decoder returned beside them, scores [n, k])."""


class ResponseMemo:
    """Body bytes → the rows and scores answered for them, for one model version."""

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        generation: Callable[[], int | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``generation()`` is the model's flush generation now, or None while it is not known
        (then nothing is answered or remembered)."""
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._generation = generation
        self._clock = clock
        self._filled_under: int | None = None
        self._entries: OrderedDict[tuple[int, bytes], tuple[float, Answer]] = OrderedDict()
        self._seen: dict[int, None] = {}  # hashes of bodies answered once, oldest first
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _current(self) -> bool:
        generation = self._generation()
        if generation is None:
            return False
        if generation != self._filled_under:
            self.clear()
            self._filled_under = generation
        return True

    def get(self, route: int, body: bytes) -> Answer | None:
        """The answer remembered for ``body`` on ``route`` (v1 or v2: their decoders differ)."""
        key = (route, body)
        found = self._entries.get(key) if self._current() else None
        if found is None:
            self.misses += 1
            return None
        expires, answer = found
        if expires <= self._clock():
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, route: int, body: bytes, answer: Answer) -> None:
        """Remember ``answer`` for ``body`` (skipped for bodies over ``MAX_BODY_BYTES``)."""
        if len(body) > MAX_BODY_BYTES or not self._current():
            return
        key = (route, body)
        digest = hash(key)  # (the body's own hash is cached on it since get())
        seen = self._seen
        if digest not in seen:
            seen[digest] = None
            if len(seen) > self.capacity:
                del seen[next(iter(seen))]
            return
        entries = self._entries
        entries[key] = (self._clock() + self.ttl_s, answer)
        entries.move_to_end(key)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
