"""The prediction log's writer thread: a bounded queue in, Parquet files out.

The event loop only appends to the queue (:meth:`LogWriter.submit`: one lock, no I/O, no Arrow);
a full queue (the writer is behind, the disk is slow) refuses the item and its rows are counted
as dropped. The thread wakes every ``poll_s``, takes everything queued, turns it into Arrow record
batches and appends them to the open file of their model version and day (labels: of their model
and day), buffering up to ``row_group_rows`` rows per file before writing a row group.

A file is opened (under its hidden name) when its first row group is written, and closed
(renamed to its final name) after ``file_rows`` rows, ``file_s`` seconds, a change of day, or at
stop; then :class:`~server.predlog.bound.DiskBound` deletes the oldest files past the bound.

Any failure of a file (no room, no permission, its directory gone) is counted and logged
(throttled); the file's rows are dropped, counted, and its hidden file removed; the next rows
open a new file (so a later write may succeed). The log's root directory is made at start and
never again: if it vanishes, every write fails (counted) until it is back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from server.predlog.bound import DiskBound
from server.predlog.format import (
    HIDDEN,
    LABELS,
    LABELS_SCHEMA,
    ROWS,
    TIME_TYPE,
    day_dir,
    day_of,
    file_name,
)
from server.predlog.metrics import QUEUE_FULL, STOPPED, WRITE_ERROR, WriterCounts
from server.ratelimit import ThrottledLog

log = logging.getLogger(__name__)

LABEL_BYTES = 200
"""What a queued label is taken to weigh against the queue's bound."""

AnswerFn = Callable[[NDArray[Any]], NDArray[Any]]
"""One number per row of the score matrix (see :mod:`server.monitoring.tasks`)."""


@dataclass(frozen=True, eq=False)
class Source:
    """One model version whose rows are logged: its files' schema, and how to get the answer."""

    model: str
    version: int
    schema: pa.Schema
    answers: AnswerFn


@dataclass(frozen=True, slots=True)
class RowsItem:
    """Sampled rows of one answered batch, as the event loop queued them."""

    source: Source
    time_s: float
    rows: NDArray[np.float32]
    scores: NDArray[np.float32]
    parts: Sequence[tuple[str, int, int]]
    """(request_id, start_row, row_count) per request part of the whole batch, in row order."""
    picked: NDArray[np.bool_] | None
    """Which rows of the batch were sampled (None: every row)."""


@dataclass(frozen=True, slots=True)
class LabelItem:
    model: str
    version: int
    time_s: float
    request_id: str | None
    row: int | None
    row_hash: str | None
    target: float


Item = RowsItem | LabelItem


@dataclass(eq=False)
class _OpenFile:
    kind: str
    model: str
    day: str
    schema: pa.Schema
    hidden: Path
    final: Path
    opened_at: float
    rows: int = 0
    """Rows added (written and pending)."""
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0
    writer: pq.ParquetWriter | None = None


class LogWriter:
    """The thread that writes queued rows and labels (one per extension; see module doc)."""

    def __init__(
        self,
        root: Path,
        counts: WriterCounts,
        *,
        file_rows: int,
        file_s: float,
        max_bytes: int,
        queue_max_bytes: int = 64 * 1024 * 1024,
        row_group_rows: int = 16_384,
        poll_s: float = 0.25,
    ) -> None:
        self.root = root
        self.counts = counts
        self.file_rows = max(1, file_rows)
        self.file_s = file_s
        self.queue_max_bytes = queue_max_bytes
        self.row_group_rows = max(1, min(row_group_rows, self.file_rows))
        self.poll_s = max(0.001, min(poll_s, file_s / 2))
        self.bound = DiskBound(root, max_bytes, abandoned_s=max(3_600.0, 2 * file_s))
        self._lock = threading.Lock()
        self._queue: deque[tuple[Item, int]] = deque()
        self._queued_bytes = 0
        self._accepting = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: dict[tuple[Any, ...], _OpenFile] = {}
        self._names = itertools.count()
        self._pid = os.getpid()
        self._throttled = ThrottledLog(log)

    # --- the event loop's side -----------------------------------------------------------

    def submit(self, item: Item, nbytes: int) -> str | None:
        """Queue ``item``; None when taken, else why not (``queue_full``, ``stopped``)."""
        with self._lock:
            if not self._accepting:
                return STOPPED
            if self._queued_bytes + nbytes > self.queue_max_bytes:
                return QUEUE_FULL
            self._queue.append((item, nbytes))
            self._queued_bytes += nbytes
        return None

    def start(self) -> None:
        """Make the root directory (errors are counted: writes fail until it exists), start the
        thread."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._failed(None, exc)
        self._wake.clear()
        with self._lock:
            self._accepting = True
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Refuse new items, write what is queued, close every file, join the thread (blocking:
        call it off the event loop). False if the thread did not finish within ``timeout_s``."""
        with self._lock:
            self._accepting = False
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self.bound.rescan()
            self.counts.bytes_on_disk = self.bound.total_bytes
        while True:
            stopping = self._wake.wait(self.poll_s)
            try:
                self._write(self._take())
                if stopping:
                    for key in list(self._open):
                        self._close(key)
                    return
                self._close_aged()
            except Exception as exc:  # a bug here must not end the thread
                self._failed(None, exc)
                if stopping:
                    return

    def _take(self) -> list[Item]:
        with self._lock:
            taken, self._queue = self._queue, deque()
            self._queued_bytes = 0
        return [item for item, _ in taken]

    def _write(self, items: list[Item]) -> None:
        labels: dict[tuple[str, str], list[LabelItem]] = {}
        for item in items:
            if isinstance(item, LabelItem):
                labels.setdefault((item.model, day_of(item.time_s)), []).append(item)
                continue
            source = item.source
            try:
                batch = rows_batch(item)
            except Exception as exc:
                self._failed(source.model, exc, rows=len(item.rows))
                continue
            key = (ROWS, source)  # a Source hashes by identity: one file per served version
            self._append(key, ROWS, source.model, day_of(item.time_s), source.schema, batch)
        for (model, day), found in labels.items():
            try:
                batch = labels_batch(found)
            except Exception as exc:
                self._failed(model, exc, rows=len(found))
                continue
            self._append((LABELS, model), LABELS, model, day, LABELS_SCHEMA, batch)

    def _append(
        self,
        key: tuple[Any, ...],
        kind: str,
        model: str,
        day: str,
        schema: pa.Schema,
        batch: pa.RecordBatch,
    ) -> None:
        current = self._open.get(key)
        if current is not None and current.day != day:
            self._close(key)
        while batch.num_rows:
            f = self._open.get(key)
            if f is None:
                f = self._open[key] = self._new_file(kind, model, day, schema)
            room = self.file_rows - f.rows
            f.pending.append(batch.slice(0, room))
            taken = min(room, batch.num_rows)
            batch = batch.slice(taken)
            f.rows += taken
            f.pending_rows += taken
            if f.pending_rows >= self.row_group_rows:
                try:
                    self._flush(f)
                except Exception as exc:
                    del self._open[key]
                    self._discard(f, exc)
                    continue
            if f.rows >= self.file_rows:
                self._close(key)

    def _new_file(self, kind: str, model: str, day: str, schema: pa.Schema) -> _OpenFile:
        name = file_name(kind, int(time.time() * 1000), self._pid, next(self._names))
        folder = day_dir(self.root, model, day)
        return _OpenFile(
            kind, model, day, schema, folder / (HIDDEN + name), folder / name, time.monotonic()
        )

    def _flush(self, f: _OpenFile) -> None:
        """Write ``f``'s pending rows as one row group (opening the file first if need be)."""
        if f.writer is None:
            f.writer = self._open_writer(f)
        table = pa.Table.from_batches(f.pending, schema=f.schema).combine_chunks()
        f.pending, f.pending_rows = [], 0
        f.writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def _open_writer(self, f: _OpenFile) -> pq.ParquetWriter:
        """A writer on ``f``'s hidden file; its folders are made below the root (never the root
        itself). Tried twice: the disk bound of another worker may remove an emptied day folder
        between our ``mkdir`` and the open."""
        for attempt in (1, 2):
            f.hidden.parent.parent.mkdir(exist_ok=True)
            f.hidden.parent.mkdir(exist_ok=True)
            try:
                return pq.ParquetWriter(str(f.hidden), f.schema, compression="zstd")
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _close(self, key: tuple[Any, ...]) -> None:
        f = self._open.pop(key)
        try:
            if f.pending_rows or f.writer is None:
                self._flush(f)
            assert f.writer is not None
            f.writer.close()
            f.writer = None
            os.rename(f.hidden, f.final)
            size = f.final.stat().st_size
        except Exception as exc:
            self._discard(f, exc)
            return
        if f.kind == ROWS:
            self.counts.rows[f.model] += f.rows
        else:
            self.counts.labels[f.model] += f.rows
        open_paths = frozenset(o.hidden for o in self._open.values())
        bound = self.bound
        deleted, errors = bound.deleted_files, bound.errors
        bound.closed(f.final, size, open_paths=open_paths)
        self.counts.deleted_files += bound.deleted_files - deleted
        if bound.errors > errors:
            self.counts.errors["delete"] += bound.errors - errors
        self.counts.bytes_on_disk = bound.total_bytes

    def _close_aged(self) -> None:
        now = time.monotonic()
        for key, f in list(self._open.items()):
            if now - f.opened_at >= self.file_s:
                self._close(key)

    def _discard(self, f: _OpenFile, exc: BaseException) -> None:
        """``f`` failed: count and log, drop its rows, remove what it left on disk."""
        self._failed(f.model, exc, rows=f.rows)
        if f.writer is not None:
            with contextlib.suppress(Exception):
                f.writer.close()
        with contextlib.suppress(OSError):
            f.hidden.unlink()

    def _failed(self, model: str | None, exc: BaseException, *, rows: int = 0) -> None:
        self.counts.errors["write"] += 1
        if model is not None and rows:
            self.counts.dropped[(model, WRITE_ERROR)] += rows
        self._throttled(
            logging.ERROR,
            "event=prediction_log_write_failed directory=%s model=%s rows_dropped=%d error=%r",
            self.root,
            model,
            rows,
            exc,
        )


def rows_batch(item: RowsItem) -> pa.RecordBatch:
    """The Arrow rows of a queued batch (its request parts expanded for the sampled rows)."""
    source = item.source
    n = len(item.rows)
    ids = np.array([p[0] for p in item.parts], dtype=object)
    starts = np.array([p[1] for p in item.parts], dtype=np.int64)
    counts = np.array([p[2] for p in item.parts], dtype=np.int64)
    part = np.repeat(np.arange(len(counts)), counts)
    # the row's index within its request: its part's start_row + its offset within the part
    first = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum()), dtype=np.int64) - first[part] + starts[part]
    if item.picked is not None:
        part, within = part[item.picked], within[item.picked]
    if len(part) != n:
        raise ValueError(f"request parts cover {len(part)} rows, the batch has {n}")
    features = np.asfortranarray(item.rows, dtype=np.float32)
    answers = np.asarray(source.answers(item.scores), dtype=np.float32)
    columns = [
        pa.array(np.full(n, int(item.time_s * 1_000_000), dtype=np.int64), type=TIME_TYPE),
        pa.array(np.full(n, source.version, dtype=np.int32)),
        pa.array(ids[part], type=pa.string()),
        pa.array(within.astype(np.int32)),
        pa.array(answers),
        *(pa.array(features[:, j]) for j in range(features.shape[1])),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=source.schema)


def labels_batch(labels: list[LabelItem]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([int(x.time_s * 1_000_000) for x in labels], type=TIME_TYPE),
            pa.array([x.version for x in labels], type=pa.int32()),
            pa.array([x.request_id for x in labels], type=pa.string()),
            pa.array([x.row for x in labels], type=pa.int32()),
            pa.array([x.row_hash for x in labels], type=pa.string()),
            pa.array([x.target for x in labels], type=pa.float64()),
        ],
        schema=LABELS_SCHEMA,
    )
