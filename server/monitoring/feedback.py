"""Live quality: remember served rows so that labels arriving later can be matched to their scores.

:class:`ServedRows` keeps the newest ``capacity`` served rows in a ring: each row's float32 bytes
and its answer (see below), under a global sequence number (ring slot = seq % capacity). Two
keys find a row again:

- ``(request_id, row)``: an ordered map request_id → its parts, each (first row within the
  request, first seq, row count), filled in :meth:`ServedRows.record` (one dict insert per
  request) and pruned from the front as rows fall out of the ring (a few shards a call, see
  below: an id may outlive its rows by 16 calls, and a part found so is dropped when its id comes
  again). A request that the batcher
  split arrives as several (request_id, start_row, row_count) parts, in any order and with other
  requests' rows between them; a part that overlaps the rows already known for its id starts a
  new request (a reused id: newest wins). Each part is packed into one int (see :func:`_pack`),
  and a request of one part (nearly all) maps to that int alone, so the index holds no object
  the garbage collector tracks. With tuples, each request added two tracked objects and pruning
  freed as many: the young generation's count stayed flat under steady load, no young collection
  ran, and up to ``2 x capacity`` tuples piled up in it, to be walked in one young collection
  when traffic changed (52 ms for 200,000 tuples at the end of a c=64 run, measured with a
  probe that is not in the repository: docs/benchmarks.md). The map is split into
  :data:`SHARDS` ordered maps by the id's hash: a dict that takes new keys and drops old ones at
  the same rate rebuilds its table every so often, in one go, and one map of 100,000 ids did so
  every ~250,000 requests for 4-20 ms of the event loop, and at each doubling while it filled
  (``loadtests/bench/feedback_index.py`` times both); a shard rebuilds 1/64 of that.
- ``row_hash``: the hex of the cache's row digest (``server.cache.keys.row_digests``): blake2b,
  16-byte digest, of the row's canonical little-endian float32 bytes (-0.0 as 0.0, every NaN as
  one quiet NaN), see :func:`row_hash`; one definition of "this row" across the server.
  Hashing costs about 1-2 us a row in Python, which would be most of the drift monitor's
  per-row budget, for a key that callers may never use. So rows are hashed lazily: the first
  lookup by hash hashes every remembered row not yet hashed (each row at most once), later
  lookups only the rows served since, into a ring of digests beside the rows (16 bytes a row),
  which a lookup scans with one vectorised comparison (43-49 us of CPU for 100,000 rows). A dict
  from hex digest to row held 200 bytes a row (20 MB per model version at the default
  capacity) for the same answers. When two remembered rows are identical, the newest one wins.

Memory, all bounded by ``capacity`` rows: the rows' bytes, their scores and label references and
the digests (``capacity x (features x 4 + 28)`` bytes: 100,000 rows of 24 features is 12.4 MB per
model version, touched as the ring first fills); and the request index, one entry per
remembered request (plus the ids of up to 16 ``record`` calls not pruned yet): about 185 bytes
for a short id, 305 for the longest (128 characters), so from 1.2 MB (16-row requests) to 31 MB
(one-row requests with 128-character ids) at 100,000 rows (tracemalloc; 290 and 410 bytes when
parts were tuples).
The price of hashing lazily is a one-off pause on the event loop at the first hash lookup
(measured 0.14-0.22 s for 100,000 rows on a shared 2-core machine).

Each row is remembered with one number, what the server answered for it: the positive-class
score (binary), the predicted class's index (multiclass) or the predicted value (regression).
The labels matched to them go to the task's quality window (``quality.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from server.cache.keys import DIGEST_BYTES, row_digests
from server.errors import UnknownFeedbackId


def row_hash(row: ArrayLike) -> str:
    """Feedback key of a row: hex of the cache's blake2b digest of its canonical float32 bytes."""
    return row_digests(np.asarray(row, dtype=np.float32).reshape(1, -1))[0].hex()


_LOW = 0xFFFF_FFFF


def _pack(first_row: int, seq: int, count: int) -> int:
    """One request part as one int: ``seq`` above 64 bits, ``first_row`` and ``count`` below
    (each under 2**32: a request's rows are bounded far below that)."""
    return (seq << 64) | (first_row << 32) | count


def _unpack(part: int) -> tuple[int, int, int]:
    """(first row within the request, first seq, row count) of a :func:`_pack` ed part."""
    return (part >> 32) & _LOW, part >> 64, part & _LOW


SHARDS = 64
"""Ordered maps the request index is split into (a power of two: the shard is the hash's low
bits)."""
PRUNE_SHARDS = 4
"""Shards each :meth:`ServedRows.record` prunes, in turn."""


def _end(part: int) -> int:
    """The seq after a :func:`_pack` ed part's last row (its first seq + its row count)."""
    return (part >> 64) + (part & _LOW)


def _parts(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return (value,) if isinstance(value, int) else value


class ServedRows:
    """The newest ``capacity`` served rows, their answers, and two ways to find them."""

    def __init__(self, capacity: int, n_features: int, *, shards: int = SHARDS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if shards < 1 or shards & (shards - 1):
            raise ValueError(f"shards must be a power of two, got {shards}")
        self.capacity = capacity
        self._rows = np.zeros((capacity, n_features), dtype="<f4")
        self._scores = np.zeros(capacity, dtype=np.float32)
        self._label_ref = np.full(capacity, -1, dtype=np.int64)
        self._shadowed = np.zeros(capacity, dtype=bool)  # scored in shadow, not answered
        self._next_seq = 0
        # request_id -> its part (one packed int) or parts (a tuple of them, newest last), in
        # the shard of the id's hash; each shard in seq order
        self._by_request: list[OrderedDict[str, int | tuple[int, ...]]] = [
            OrderedDict() for _ in range(shards)
        ]
        self._shard_mask = shards - 1
        self._prune_next = 0  # the shard the next prune starts at
        # the digest of the row in each slot as two uint64 halves, each half contiguous (a lookup
        # compares the first half of every slot, then the second of the few that matched);
        # valid for the seqs below _hashed_upto
        self._digest_first = np.zeros(capacity, dtype=np.uint64)
        self._digest_second = np.zeros(capacity, dtype=np.uint64)
        self._hashed_upto = 0

    @property
    def oldest_seq(self) -> int:
        return max(0, self._next_seq - self.capacity)

    @property
    def remembered(self) -> int:
        return self._next_seq - self.oldest_seq

    @property
    def requests_indexed(self) -> int:
        """Request ids findable in the (request_id, row) index (at most one per remembered row;
        every shard is pruned first)."""
        self._prune(len(self._by_request))
        return sum(map(len, self._by_request))

    @property
    def hashes_indexed(self) -> int:
        """Remembered rows whose hash is known (hashed by a row_hash lookup)."""
        return max(0, self._hashed_upto - self.oldest_seq)

    def record(
        self,
        rows: NDArray[np.float32],
        scores: NDArray[np.float32],
        requests: Sequence[tuple[str, int, int]],
        shadowed: NDArray[np.bool_] | None = None,
    ) -> None:
        """Remember a batch: rows, answers (one number a row), and (request_id, start_row,
        row_count) per request part in row order (``start_row``: the part's first row within
        its request); ``shadowed``: the rows scored in shadow (None: none)."""
        n = rows.shape[0]
        start = self._next_seq
        keep = min(n, self.capacity)
        seqs_from = start + n - keep
        slot = seqs_from % self.capacity
        first = min(keep, self.capacity - slot)
        self._rows[slot : slot + first] = rows[n - keep : n - keep + first]
        self._scores[slot : slot + first] = scores[n - keep : n - keep + first]
        self._label_ref[slot : slot + first] = -1
        if shadowed is None:
            self._shadowed[slot : slot + first] = False
        else:
            self._shadowed[slot : slot + first] = shadowed[n - keep : n - keep + first]
        if first < keep:
            rest = keep - first
            self._rows[:rest] = rows[n - rest :]
            self._scores[:rest] = scores[n - rest :]
            self._label_ref[:rest] = -1
            self._shadowed[:rest] = False if shadowed is None else shadowed[n - rest :]
        self._next_seq = start + n
        seq = start
        shards, mask = self._by_request, self._shard_mask
        for request_id, first_row, count in requests:
            index = shards[hash(request_id) & mask]
            known = index.pop(request_id, None)  # (re-inserted last: the map stays in seq order)
            part = _pack(first_row, seq, count)
            if known is not None:  # parts whose rows left the ring (not pruned yet) are gone
                oldest = self.oldest_seq
                parts = tuple(p for p in _parts(known) if _end(p) > oldest)
                known = parts[0] if len(parts) == 1 else (parts or None)
            if known is None:  # the common case, first
                index[request_id] = part
            else:
                parts = _parts(known)
                if any(
                    r < first_row + count and first_row < r + c for r, _, c in map(_unpack, parts)
                ):
                    index[request_id] = part  # a reused id: newest wins
                else:
                    index[request_id] = (*parts, part)  # another part of it
            seq += count
        self._prune()

    def find_by_request(self, request_id: str, row: int) -> int:
        """Sequence number of row ``row`` of request ``request_id``."""
        known = self._by_request[hash(request_id) & self._shard_mask].get(request_id)
        if known is None:
            raise UnknownFeedbackId(f"request id {request_id!r} is unknown or forgotten")
        parts = [_unpack(part) for part in _parts(known)]
        for first_row, start, count in parts:
            if first_row <= row < first_row + count:
                seq = start + row - first_row
                if seq < self.oldest_seq:
                    raise UnknownFeedbackId(f"row {row} of request {request_id!r} is forgotten")
                return seq
        seen = sum(count for _, _, count in parts)
        raise UnknownFeedbackId(f"request {request_id!r} had {seen} row(s); there is no row {row}")

    def find_by_hash(self, digest: str) -> int:
        """Sequence number of the newest remembered row with this :func:`row_hash`."""
        unknown = UnknownFeedbackId(f"row hash {digest!r} is unknown or forgotten")
        try:
            raw = bytes.fromhex(digest) if len(digest) == 2 * DIGEST_BYTES else b""
        except ValueError:
            raise unknown from None
        if len(raw) != DIGEST_BYTES:
            raise unknown
        self._hash_new_rows()
        first, second = np.frombuffer(raw, dtype=np.uint64)
        filled = min(self._next_seq, self.capacity)
        slots = np.flatnonzero(self._digest_first[:filled] == first)
        slots = slots[self._digest_second[slots] == second]
        if slots.size == 0:
            raise unknown
        # slot -> the seq it holds now; the newest of identical rows wins
        oldest = self.oldest_seq
        return int(oldest + ((slots - oldest) % self.capacity).max())

    def score(self, seq: int) -> float:
        return float(self._scores[seq % self.capacity])

    def shadowed(self, seq: int) -> bool:
        """Whether the row was scored in shadow (not answered by this version)."""
        return bool(self._shadowed[seq % self.capacity])

    def label_ref(self, seq: int) -> int:
        """Where this row's label went in the quality window (-1: not labelled yet)."""
        return int(self._label_ref[seq % self.capacity])

    def set_label_ref(self, seq: int, ref: int) -> None:
        self._label_ref[seq % self.capacity] = ref

    def _hash_new_rows(self) -> None:
        seq = max(self._hashed_upto, self.oldest_seq)
        while seq < self._next_seq:  # at most two runs: before and after the ring wraps
            slot = seq % self.capacity
            run = min(self._next_seq - seq, self.capacity - slot)
            joined = b"".join(row_digests(self._rows[slot : slot + run]))
            halves = np.frombuffer(joined, dtype=np.uint64).reshape(-1, 2)
            self._digest_first[slot : slot + run] = halves[:, 0]
            self._digest_second[slot : slot + run] = halves[:, 1]
            seq += run
        self._hashed_upto = self._next_seq

    def _prune(self, visit: int = PRUNE_SHARDS) -> None:
        """Drop the ids whose rows all left the ring from the fronts of the next ``visit``
        shards, in turn (all 64 would cost ~20 µs a call; pruning the whole index at longer
        intervals would pop many ids in one go). An id may outlive its rows by as many calls as
        it takes to come round to its shard (16); lookups check the seq."""
        oldest = self.oldest_seq
        shards = self._by_request
        first = self._prune_next
        visit = min(visit, len(shards))
        self._prune_next = (first + visit) % len(shards)
        for i in range(first, first + visit):
            requests = shards[i % len(shards)]
            while requests:
                known = next(iter(requests.values()))
                if _end(known if isinstance(known, int) else known[-1]) > oldest:  # newest part
                    break
                requests.popitem(last=False)
