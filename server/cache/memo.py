"""The response memo: a repeated request body answered before it is even decoded.

The row cache (``server.cache.batch``) saves the model's run, but a hit still pays the request
path around it: decoding the JSON, a trip through the batcher, hashing every row. When the same
client sends the same body again -- the same transaction scored twice, a retry -- the exact bytes
repeat, and the memo answers them from a dict keyed by the body itself: one hash of the bytes
(Python's, with a full byte comparison on a match, so two different bodies never share an
answer) and no decode. The answer is re-encoded per request (its request id differs), and the
request is still admitted (deadline, shutdown) and observed by monitoring like any other.

A body is remembered the second time it is answered, not the first: the first time only its hash
goes into a bounded "seen" set (a doorkeeper, as in TinyLFU caches): the newest ``capacity``
hashes, oldest forgotten first. Traffic that never repeats then costs a set insert per request
instead of an entry (fresh memory on every miss); a body that repeats is remembered on its
second answer and answered from here from its third.

Scope and bounds, one memo per cached model version (so the model's name, version and ONNX file
are implied): bodies up to ``MAX_BODY_BYTES``; at most ``capacity`` entries and ``max_bytes``
bytes (the body, the rows, the scores and what the route keeps beside them -- a /v1 response
encoded ahead grows with the rows -- of each, plus ``ENTRY_OVERHEAD``), least recently used
evicted first; each entry valid for the model's cache TTL and only under the flush token it was
computed under. The token (``server.cache.generations.Generations.memo_token``) changes with
every flush of the model, here or -- with Redis -- in another worker (seen within the
generation refresh interval), and also when a flush could not reach Redis; a changed token
empties the memo, and an answer computed under an older token is not remembered.
Different spellings of the same rows (``1`` and ``1.0``, other key orders or spacing) are
different bodies: they miss here and meet in the row cache, whose keys are canonical.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import msgspec
import numpy as np

MAX_BODY_BYTES = 8 * 1024
"""Larger bodies are not remembered (big requests rarely repeat byte for byte)."""
ENTRY_OVERHEAD = 400
"""Bytes counted per entry beyond the body and the arrays' data (Python objects, dict slots)."""

Answer = tuple[np.ndarray, Any, np.ndarray]
"""(rows float32 [n, f], what the route's decoder returned beside them, scores [n, k])."""


class ResponseMemo:
    """Body bytes → the rows and scores answered for them, for one model version."""

    def __init__(
        self,
        capacity: int,
        max_bytes: int,
        ttl_s: float,
        token: Callable[[], Hashable | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``token()`` is the model's flush token now, or None while it is not known (then
        nothing is answered or remembered)."""
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._token = token
        self._clock = clock
        self._filled_under: Hashable | None = None
        self._entries: OrderedDict[tuple[int, bytes], tuple[float, int, Answer]] = OrderedDict()
        # Hashes of bodies answered once, oldest first. An OrderedDict, not a dict: forgetting
        # the oldest of a dict (``del d[next(iter(d))]``) scans the holes its earlier deletions
        # left at the front, ~20 us a request at 10,000 hashes against ~2 us here.
        self._seen: OrderedDict[int, None] = OrderedDict()
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> dict[str, int]:
        """Size against bounds, for the model view (O(1))."""
        return {
            "entries": len(self._entries),
            "max_entries": self.capacity,
            "bytes": self.size_bytes,
            "max_bytes": self.max_bytes,
            "seen_hashes": len(self._seen),
            "max_seen_hashes": self.capacity,
        }

    def token(self) -> Hashable | None:
        """The flush token now (None: unknown); empties the memo when it changed."""
        token = self._token()
        if token is not None and token != self._filled_under:
            self.clear()
            self._filled_under = token
        return token

    def get(self, route: int, body: bytes) -> Answer | None:
        """The answer remembered for ``body`` on ``route`` (v1 or v2: their decoders differ)."""
        key = (route, body)
        found = self._entries.get(key) if self.token() is not None else None
        if found is None:
            self.misses += 1
            return None
        expires, size, answer = found
        if expires <= self._clock():
            del self._entries[key]
            self.size_bytes -= size
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(
        self,
        route: int,
        body: bytes,
        answer: Answer | Callable[[], Answer],
        token: Hashable | None,
    ) -> None:
        """Remember ``answer`` for ``body``, computed under flush ``token`` (read before the
        request was answered): dropped when the token has changed since, when the body is over
        ``MAX_BODY_BYTES``, or on the body's first answer (the doorkeeper). A callable
        ``answer`` is called only when the entry is kept (what it keeps may cost an encode)."""
        if token is None or len(body) > MAX_BODY_BYTES or self.token() != token:
            return
        key = (route, body)
        digest = hash(key)  # (the body's own hash is cached on it since get())
        seen = self._seen
        if digest not in seen:
            seen[digest] = None
            if len(seen) > self.capacity:
                seen.popitem(last=False)
            return
        if callable(answer):
            answer = answer()
        rows, kept, scores = answer
        size = len(body) + rows.nbytes + scores.nbytes + payload_bytes(kept) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.size_bytes -= old[1]
        entries[key] = (self._clock() + self.ttl_s, size, answer)
        self.size_bytes += size
        while len(entries) > self.capacity or self.size_bytes > self.max_bytes:
            _, (_, dropped, _) = entries.popitem(last=False)
            self.size_bytes -= dropped

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
        self.size_bytes = 0


def payload_bytes(value: object, depth: int = 0) -> int:
    """About how many bytes ``value`` holds beyond its fixed overhead: the length of bytes and
    strings, the data of arrays, summed through tuples, lists and msgspec structs (three levels
    deep; anything else, or deeper, counts its ``sys.getsizeof``)."""
    if value is None:
        return 0
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if depth < 3:
        if isinstance(value, msgspec.Struct):
            value = msgspec.structs.astuple(value)
        if isinstance(value, tuple | list):
            return 8 * len(value) + sum(payload_bytes(item, depth + 1) for item in value)
    return sys.getsizeof(value)
