"""Which rows each scenario sends: sequential replay, Zipf-repeated, all-unique, batches.

A picker turns "the next request" into a :class:`Request`: the rows' keys (for scoring and the
repeat check), what each answer is scored against (the class index, or a regressor's target) and
the ready-to-send body (JSON lists, or objects of raw values for a model with typed columns).
Pickers hold no Locust state, so the tests drive them in-process; one picker per model is shared
by all users of a process, which keeps sequential replay from sending the same row from every
user at once.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

from loadtests.holdout import ReplaySet


@dataclass(frozen=True)
class Request:
    keys: list[int]
    labels: list[float]
    """Per row: the true class index (a classifier) or the target (a regressor)."""
    body: bytes

    @property
    def rows(self) -> int:
        return len(self.keys)


def parse_batch_size(spec: str) -> tuple[int, int]:
    """'64' -> (64, 64); '32-256' -> (32, 256)."""
    lo, sep, hi = spec.partition("-")
    try:
        low = int(lo)
        high = int(hi) if sep else low
    except ValueError:
        raise ValueError(f"batch size must be N or LOW-HIGH, got {spec!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"batch size must satisfy 1 <= LOW <= HIGH, got {spec!r}")
    return low, high


class SequentialPicker:
    """Rows in a fixed order, wrapping around: every row once before any row twice.

    ``start`` offsets the cursor (workers of a distributed run start at different places).
    """

    def __init__(self, replay: ReplaySet, start: int = 0) -> None:
        self.replay = replay
        self._cursor = itertools.count(start)
        self._labels = replay.labels

    def take(self, rows: int = 1) -> Request:
        n = self.replay.n_rows
        keys = [next(self._cursor) % n for _ in range(rows)]
        return Request(keys, [self._labels[k] for k in keys], self.replay.body(keys))


class ZipfPicker:
    """Rows drawn with probability proportional to ``1 / rank**s`` (a few hot rows, a long tail).

    Ranks are a seeded permutation of the hold-out, so the hot rows are not just the first rows.
    Draws are made in blocks up front; a request costs a list index.
    """

    BLOCK = 1 << 16

    def __init__(self, replay: ReplaySet, s: float = 1.1, seed: int = 0) -> None:
        if s <= 0:
            raise ValueError(f"zipf exponent must be positive, got {s}")
        self.replay = replay
        rng = np.random.default_rng(seed)
        n = replay.n_rows
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
        rank_to_row = rng.permutation(n)
        draws = rng.choice(n, size=self.BLOCK, p=weights / weights.sum())
        self._draws: list[int] = rank_to_row[draws].tolist()
        self._i = itertools.count()
        self._labels = replay.labels

    def take(self, rows: int = 1) -> Request:
        keys = [self._draws[next(self._i) % self.BLOCK] for _ in range(rows)]
        return Request(keys, [self._labels[k] for k in keys], self.replay.body(keys))


class UniquePicker:
    """Every request carries rows never sent before in this run (a cold cache).

    The first pass sends the hold-out rows as they are; pass ``p >= 1`` scales one continuous
    (numeric) column by ``1 + p * 2**-20`` (a change in the 6th significant digit that the model
    barely notices but that gives the row new float32 bytes, hence a new cache key). Keys are
    ``p * n + row`` so each perturbed copy is scored as its own row.
    """

    def __init__(self, replay: ReplaySet, start: int = 0) -> None:
        self.replay = replay
        self._cursor = itertools.count(start)
        self._labels = replay.labels
        X = replay.X
        numeric = _numeric_columns(replay)
        # The numeric column with the most distinct values is continuous, so a tiny change is
        # realistic (a category code must stay a known category).
        self._feature = max(numeric, key=lambda j: np.unique(X[:, j]).size)

    def take(self, rows: int = 1) -> Request:
        n = self.replay.n_rows
        keys: list[int] = []
        parts: list[bytes] = []
        for _ in range(rows):
            k = next(self._cursor)
            row, p = k % n, k // n
            keys.append(k)
            if p == 0:
                parts.append(self.replay.row_json[row])
            else:
                values = self.replay.X[row].copy()
                v = values[self._feature]
                values[self._feature] = (
                    v * np.float32(1 + p * 2.0**-20) if v != 0 else np.float32(p * 1e-6)
                )
                parts.append(self.replay.encode_row(values))
        labels = [self._labels[k % n] for k in keys]
        return Request(keys, labels, b'{"instances":[' + b",".join(parts) + b"]}")


def _numeric_columns(replay: ReplaySet) -> list[int]:
    """Indices of the replay's numeric columns (every column of an all-numeric model)."""
    encoder = replay.encoder
    if encoder is None:
        return list(range(replay.X.shape[1]))
    numeric = [j for j, c in enumerate(encoder.spec.columns) if c.kind == "numeric"]
    if not numeric:
        raise ValueError(f"{replay.model}: AllUnique needs a numeric column to perturb")
    return numeric


class BatchSizes:
    """Batch sizes drawn uniformly from ``[low, high]``."""

    def __init__(self, spec: str, seed: int = 0) -> None:
        self.low, self.high = parse_batch_size(spec)
        self._rng = random.Random(seed)

    def next(self) -> int:
        return self.low if self.low == self.high else self._rng.randint(self.low, self.high)


# The ramp/spike schedule of shapes.RampSpike (kept here, free of Locust, so it is testable):
# (end of stage as a fraction of the total duration, users at its end as a multiple of peak,
#  ramp linearly inside the stage?)
STAGES: tuple[tuple[float, float, bool], ...] = (
    (0.15, 0.125, False),  # warm: a light steady load
    (0.50, 1.0, True),  # ramp up to the peak
    (0.75, 3.0, False),  # spike: three times the peak, all at once
    (1.00, 0.25, False),  # recover: does latency come back down?
)


def users_at(t: float, duration: float, peak: int) -> int | None:
    """Users the shape asks for ``t`` seconds in; None once the shape is over."""
    if t >= duration:
        return None
    previous_end, previous_users = 0.0, STAGES[0][1]
    for end_fraction, multiple, ramp in STAGES:
        end = end_fraction * duration
        if t < end:
            if ramp:
                frac = (t - previous_end) / max(end - previous_end, 1e-9)
                multiple = previous_users + (multiple - previous_users) * frac
            return max(1, round(multiple * peak))
        previous_end, previous_users = end, multiple
    return None
