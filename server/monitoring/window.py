"""A rolling window of binned rows, bounded by row count and by age, kept as running bin totals.

Each column (a feature, or a derived column such as the positive score) has its own increasing
edges and so its own number of bins; all columns' bins plus one missing slot each are laid out in
one flat vector of ``slots``. Per row and column the window keeps only the flat slot index (two
bytes while there are fewer than 65,536 slots) and per row its arrival time, in a ring. Adding a
batch bins it in one broadcast comparison against a NaN-padded edge matrix, laid out
``[edge, row, column]`` so that the count of edges at or below each value is a sum of contiguous
planes; it writes the slot indices into the ring and adds one ``np.bincount`` to the totals. Rows
that fall out (ring full, or older than ``max_age_s``) are subtracted the same way. Reads take the
totals as they stand: no raw rows are kept and nothing is recomputed from them.

A column whose edges are consecutive half-integers (``c - 0.5, c + 0.5, …``: a categorical
column's codes, a classifier's predicted class) holds whole numbers; it is binned by arithmetic,
``clip(floor(x - e_0) + 1, 0, len(e))``, the same bin the comparison gives, without widening the
comparison by one plane per category. A window without such columns runs as before.

Binning compares float32 values with float32 edges, each edge rounded *up* to the nearest
float32. For a float32 value ``x`` and a float64 edge ``e``, ``x >= e`` exactly when ``x >= up(e)``,
so the bins are the same as comparing in float64, without converting every value.

Memory: ``capacity_rows x columns`` slot indices plus 8 bytes a row (5,000 rows x 26 columns is
about 300 kB). Not thread-safe: the owner serialises calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


class Counts(Protocol):
    """What a snapshot reads from a window: its rows and each column's bin counts."""

    @property
    def rows(self) -> int: ...

    def column_counts(self, column: int) -> NDArray[np.int64]: ...


class WindowCounts:
    """Bin totals without the rows behind them: one worker's window as published, or several
    workers' windows summed (``server.monitoring.shared``)."""

    def __init__(self, totals: NDArray[np.int64], offsets: NDArray[np.int64], rows: int) -> None:
        self.totals = totals
        self.offsets = offsets
        self._rows = rows

    @property
    def rows(self) -> int:
        return self._rows

    def column_counts(self, column: int) -> NDArray[np.int64]:
        return self.totals[self.offsets[column] : self.offsets[column + 1]]


class BinnedWindow:
    """Running per-slot counts over the newest ``capacity_rows`` rows younger than ``max_age_s``."""

    def __init__(
        self, edges: Sequence[Sequence[float]], *, capacity_rows: int, max_age_s: float
    ) -> None:
        if capacity_rows < 1:
            raise ValueError(f"capacity_rows must be positive, got {capacity_rows}")
        if not edges:
            raise ValueError("at least one column is needed")
        self.capacity = capacity_rows
        self.max_age_s = max_age_s
        self.n_columns = len(edges)
        coded = [j for j, e in enumerate(edges) if _consecutive_half_integers(e)]
        compared = [j for j in range(self.n_columns) if j not in set(coded)]
        self._coded: NDArray[np.intp] | None = np.array(coded, dtype=np.intp) if coded else None
        """Columns binned by arithmetic (None: every column is compared with its edges)."""
        self._compared = np.array(compared, dtype=np.intp)
        self._coded_first = np.array([edges[j][0] for j in coded], dtype=np.float64)
        self._coded_bins = np.array([len(edges[j]) for j in coded], dtype=np.float64)
        widest = max((len(edges[j]) for j in compared), default=0)
        # NaN padding: every comparison with NaN is False, so padding never counts as an edge.
        edges64 = np.full((widest, len(compared)), np.nan, dtype=np.float64)
        for i, j in enumerate(compared):
            edges64[: len(edges[j]), i] = edges[j]
        with np.errstate(over="ignore"):  # an edge past float32's range becomes +inf: still "up"
            edges32 = edges64.astype(np.float32)
        rounded_down = edges32 < edges64
        edges32[rounded_down] = np.nextafter(edges32[rounded_down], np.float32(np.inf))
        self._edges = edges32[:, None, :]
        """Shape [edge, 1, column], float32, rounded up, NaN-padded."""
        # Edges at or below a value: 0 to ``widest``, counted in the smallest dtype that holds it.
        self._count_dtype: type[np.unsignedinteger[Any]] = (
            np.uint8 if widest < 255 else np.uint16 if widest < 65_535 else np.uint32
        )
        slots_per_column = np.array([len(e) + 2 for e in edges], dtype=np.int64)
        self.offsets: NDArray[np.int64] = np.concatenate(([0], np.cumsum(slots_per_column)))
        """Column j's slots are ``offsets[j]:offsets[j+1]``; the last one is its missing slot."""
        self.n_slots = int(self.offsets[-1])
        self._missing_slot = (self.offsets[1:] - 1).astype(np.int64)
        self._column_base = self.offsets[:-1]
        dtype = np.uint16 if self.n_slots < np.iinfo(np.uint16).max else np.int32
        self._ring = np.zeros((capacity_rows, self.n_columns), dtype=dtype)
        self._times = np.zeros(capacity_rows, dtype=np.float64)
        self._head = 0
        self._size = 0
        self.totals = np.zeros(self.n_slots, dtype=np.int64)
        """Rows per slot over the current window (read-only for callers)."""

    @property
    def rows(self) -> int:
        """Rows in the window."""
        return self._size

    def oldest_time(self) -> float | None:
        """Arrival time of the oldest row in the window, or None when it is empty."""
        if self._size == 0:
            return None
        return float(self._times[(self._head - self._size) % self.capacity])

    def column_counts(self, column: int) -> NDArray[np.int64]:
        """Counts of one column: its bins in order, then its missing slot."""
        return self.totals[self.offsets[column] : self.offsets[column + 1]]

    def slots(self, values: NDArray[np.float32]) -> NDArray[np.int64]:
        """Flat slot index per value of a float32 ``[n, n_columns]`` array (NaN: missing slot)."""
        if self._coded is None:
            below = values[None, :, :] >= self._edges
            counts = np.add.reduce(below.view(np.uint8), axis=0, dtype=self._count_dtype)
            slots: NDArray[np.int64] = counts + self._column_base
        else:
            slots = self._mixed_slots(values)
        missing = np.isnan(values)
        if missing.any():
            slots = np.where(missing, self._missing_slot, slots)
        return slots

    def _mixed_slots(self, values: NDArray[np.float32]) -> NDArray[np.int64]:
        """:meth:`slots` before the missing slots, some columns binned by arithmetic."""
        assert self._coded is not None
        slots = np.empty(values.shape, dtype=np.int64)
        if self._compared.size:
            part = values[:, self._compared]
            below = part[None, :, :] >= self._edges
            counts = np.add.reduce(below.view(np.uint8), axis=0, dtype=self._count_dtype)
            slots[:, self._compared] = counts + self._column_base[self._compared]
        codes = values[:, self._coded].astype(np.float64)
        # floor(x - e_0) + 1 edges are at or below x; NaN becomes bin 0 here (the caller moves it
        # to the missing slot)
        bins = np.clip(np.floor(codes - self._coded_first) + 1.0, 0.0, self._coded_bins)
        bins = np.nan_to_num(bins, nan=0.0)
        slots[:, self._coded] = bins.astype(np.int64) + self._column_base[self._coded]
        return slots

    def add(
        self,
        values: NDArray[np.float32],
        now: float,
        *,
        arrived: NDArray[np.float64] | None = None,
    ) -> None:
        """Add the rows of an ``[n, n_columns]`` array, then expire rows that are old at ``now``.

        ``arrived`` gives each row's arrival time (non-decreasing, none after ``now``, none
        before the rows already held); without it every row arrived at ``now``.
        """
        n = values.shape[0]
        if n == 0:
            self.expire(now)
            return
        if n > self.capacity:
            values = values[-self.capacity :]
            if arrived is not None:
                arrived = arrived[-self.capacity :]
            n = self.capacity
        slots = self.slots(np.asarray(values, dtype=np.float32))
        overflow = self._size + n - self.capacity
        if overflow > 0:
            self._drop_oldest(overflow)
        first = min(n, self.capacity - self._head)
        self._ring[self._head : self._head + first] = slots[:first]
        if first < n:
            self._ring[: n - first] = slots[first:]
        if arrived is None:
            self._times[self._head : self._head + first] = now
            self._times[: n - first] = now
        else:
            self._times[self._head : self._head + first] = arrived[:first]
            self._times[: n - first] = arrived[first:]
        self._head = (self._head + n) % self.capacity
        self._size += n
        self.totals += np.bincount(slots.ravel(), minlength=self.n_slots)
        self.expire(now)

    def expire(self, now: float) -> None:
        """Drop rows older than ``max_age_s`` at time ``now``."""
        if self._size == 0:
            return
        cutoff = now - self.max_age_s
        tail = (self._head - self._size) % self.capacity
        if self._times[tail] >= cutoff:
            return
        end = tail + self._size
        if end <= self.capacity:
            stale = int(np.searchsorted(self._times[tail:end], cutoff, side="left"))
        else:
            first_part = self._times[tail:]
            stale = int(np.searchsorted(first_part, cutoff, side="left"))
            if stale == first_part.size:
                stale += int(np.searchsorted(self._times[: self._head], cutoff, side="left"))
        self._drop_oldest(stale)

    def clear(self) -> None:
        """Forget every row."""
        self._head = 0
        self._size = 0
        self.totals[:] = 0

    def _drop_oldest(self, k: int) -> None:
        if k <= 0:
            return
        k = min(k, self._size)
        tail = (self._head - self._size) % self.capacity
        end = tail + k
        if end <= self.capacity:
            dropped = self._ring[tail:end]
        else:
            dropped = np.concatenate((self._ring[tail:], self._ring[: end - self.capacity]))
        self.totals -= np.bincount(dropped.ravel(), minlength=self.n_slots)
        self._size -= k


def _consecutive_half_integers(edges: Sequence[float]) -> bool:
    """Edges ``c - 0.5, c + 0.5, c + 1.5, …`` (two or more) for a whole number ``c``, small enough
    that float64 arithmetic on them is exact. (One edge alone, e.g. a threshold of 0.5, is left
    to the comparison: it costs nothing there.)"""
    if len(edges) < 2:
        return False
    first = float(edges[0])
    if not abs(first) < 2.0**40 or len(edges) > 2**24 or not (first - 0.5).is_integer():
        return False
    return all(float(e) == first + i for i, e in enumerate(edges))
