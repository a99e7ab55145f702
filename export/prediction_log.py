"""Read a model's prediction log back: the rows it answered, joined to the labels given later.

The server writes (``server/predlog/``), per model and day, Parquet files of two kinds::

    <log dir>/<model>/day=YYYY-MM-DD/rows-<epoch_ms>-<pid>-<counter>.parquet
    <log dir>/<model>/day=YYYY-MM-DD/labels-<epoch_ms>-<pid>-<counter>.parquet

- a rows file: ``time`` (when answered, timestamp[us, UTC]), ``version`` (int32), ``request_id``
  (string), ``row`` (int32, the row's index within its request), ``answer`` (float32), then one
  float32 column per input column, named as the model card's columns: the row matrix (a category
  is its index in the column's categories, -1 unseen, NaN missing);
- a labels file: ``time`` (when the label arrived), ``version``, ``request_id`` and ``row``
  (nullable), ``row_hash`` (nullable: hex of ``server.cache.keys.row_digests`` of the row, see
  ``server.monitoring.feedback.row_hash``), ``target`` (float64: a class index, or a value).

Files whose names start with ``.`` are still being written and are skipped; a file may be deleted
(the log's disk bound) between listing and reading, which is counted, not an error.

A label finds its row by ``(request_id, row)`` -- when an id was reused, the newest logged row
answered at or before the label's time -- or else by ``row_hash`` (the newest logged row with
that hash at or before the label's time). When one row got several labels, the newest label
wins. Labels whose row was not logged (the log samples) are dropped and counted.

``since`` keeps only the rows answered at or after a time. A rows file's day is the UTC day of
its rows' time and a labels file's the day its labels arrived (never before their row was
answered), so the day folders before ``since``'s day are not listed; the rows of the rest are
filtered by ``time`` as each file is read, before anything else is done with them, and labels
that arrived before ``since`` are dropped unread (they cannot be for a row answered after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.cache.keys import row_digests
from server.errors import ExportError

ROW_META = ("time", "version", "request_id", "row", "answer")
"""The columns of a rows file before the input columns."""
LABEL_COLUMNS = ("time", "version", "request_id", "row", "row_hash", "target")


class PredictionLogError(ExportError):
    """The log cannot be read as the model's: no files, or columns unlike the card's."""


@dataclass(frozen=True)
class LogFiles:
    rows: list[Path]
    labels: list[Path]


@dataclass(frozen=True)
class LabelledRows:
    """Logged rows that got a label, oldest answered first."""

    X: NDArray[np.float32]
    """The row matrix [n, n_columns], in the card's column order."""
    y: NDArray[np.float64]
    """Each row's label (the newest one given): a class index, or a regressor's value."""
    time: NDArray[np.datetime64]
    """When each row was answered (datetime64[us], UTC)."""
    version: NDArray[np.int32]
    """The version that answered each row."""
    rows_logged: int
    """Rows read from the rows files (labelled or not)."""
    labels: int
    """Labels read from the labels files."""
    matched: int
    """Logged rows with a label (== len(y))."""
    unmatched: int
    """Labels dropped because their row was not logged (sampled out, or its file deleted), or
    that name no row (neither an id and row nor a hash) or have no target."""
    superseded: int
    """Labels dropped because a newer label was given for the same row."""
    vanished_files: int = 0
    """Files listed but deleted before they could be read."""
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """Files left out, one line each: why (columns unlike the card's, unreadable)."""
    since: datetime | None = None
    """Only rows answered at or after this time were read (None: all of them); ``rows_logged``
    and the label counts are of those, and ``unmatched`` includes the labels that arrived after
    it for rows answered before it."""


def epoch_us(t: datetime) -> int:
    """Microseconds since the epoch of an aware time (a naive one is taken as UTC)."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def log_files(log_dir: Path, model: str, since: datetime | None = None) -> LogFiles:
    """The finished rows and labels files of ``model``, oldest day first; with ``since``, only
    those of its UTC day and later (no row or label of an earlier day can be answered after)."""
    days = sorted(p for p in (log_dir / model).glob("day=*") if p.is_dir())
    if since is not None:
        first = "day=" + _utc(since).strftime("%Y-%m-%d")
        days = [p for p in days if p.name >= first]

    def finished(day: Path, kind: str) -> list[Path]:
        return sorted(p for p in day.glob(f"{kind}-*.parquet") if not p.name.startswith("."))

    return LogFiles(
        rows=[p for day in days for p in finished(day, "rows")],
        labels=[p for day in days for p in finished(day, "labels")],
    )


def read_labelled(
    log_dir: Path,
    model: str,
    columns: Sequence[str],
    files: LogFiles | None = None,
    since: datetime | None = None,
) -> LabelledRows:
    """The logged rows of ``model`` that got a label, with their newest label.

    ``columns`` are the card's input column names, in order: a rows file whose input columns
    differ is left out (and said so in ``skipped``); when every rows file differs, raise
    :class:`PredictionLogError` naming the difference. ``files``: the files to read (default:
    :func:`log_files`, listed now); one deleted before it is read is counted in
    ``vanished_files``. ``since``: only the rows answered at or after it (a naive time is UTC);
    without it, a log with no rows files is an error, with it, none since is no rows.
    """
    if files is None:
        if not (log_dir / model).is_dir():
            raise PredictionLogError(f"no prediction log for {model!r} in {log_dir}")
        files = log_files(log_dir, model, since)
    if not files.rows and since is None:
        raise PredictionLogError(f"no rows files for {model!r} in {log_dir / model}")
    since_us = None if since is None else epoch_us(since)
    labels, vanished, skipped = _read_labels(files.labels, since_us)
    need_hash = bool(labels.by_hash.any())
    rows, r_vanished, r_skipped = _read_rows(
        files.rows, list(columns), need_hash=need_hash, since_us=since_us
    )
    vanished += r_vanished
    skipped += r_skipped
    if rows is None and not files.rows:
        rows = _no_rows(len(columns), need_hash)
    if rows is None:
        first = r_skipped[0] if r_skipped else "every one vanished while being read"
        more = f" (and {len(r_skipped) - 1} more)" if len(r_skipped) > 1 else ""
        raise PredictionLogError(
            f"none of the {len(files.rows)} rows files of {model!r} can be read: {first}{more}"
        )
    logged, label_idx, joined = _join(rows, labels)
    order = np.argsort(rows.time_us[logged], kind="stable")
    logged, label_idx = logged[order], label_idx[order]
    return LabelledRows(
        X=rows.X[logged],
        y=labels.target[label_idx],
        time=rows.time_us[logged].astype("datetime64[us]"),
        version=rows.version[logged],
        rows_logged=len(rows.time_us),
        labels=len(labels.target),
        matched=len(logged),
        unmatched=len(labels.target) - joined,
        superseded=joined - len(logged),
        vanished_files=vanished,
        skipped=tuple(skipped),
        since=since,
    )


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo is not None else t


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    X: NDArray[np.float32]
    time_us: NDArray[np.int64]
    version: NDArray[np.int32]
    request_id: NDArray[Any]
    """object array of str (None: no id)"""
    row: NDArray[np.int64]
    """-1: none"""
    hashes: NDArray[Any] | None
    """object array of hex digests, when a label needs them"""


@dataclass(frozen=True)
class _Labels:
    time_us: NDArray[np.int64]
    request_id: NDArray[Any]
    row: NDArray[np.int64]
    row_hash: NDArray[Any]
    target: NDArray[np.float64]

    @property
    def by_id(self) -> NDArray[np.bool_]:
        flags: NDArray[np.bool_] = (self.request_id != None) & (self.row >= 0)  # noqa: E711
        return flags

    @property
    def by_hash(self) -> NDArray[np.bool_]:
        flags: NDArray[np.bool_] = ~self.by_id & (self.row_hash != None)  # noqa: E711
        return flags


def _read(path: Path, skipped: list[str]) -> Any | None:
    """The file as a pyarrow Table; None when it vanished or cannot be read (said in skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        if not path.exists():
            return None
        skipped.append(f"{path.name}: unreadable ({exc})")
        return None


def _numbers(table: Any, name: str, dtype: Any, missing: float | int) -> NDArray[Any]:
    column = table.column(name)
    if column.null_count:
        column = column.fill_null(missing)
    return np.asarray(column.to_numpy(), dtype=dtype)


def _strings(table: Any, name: str) -> NDArray[Any]:
    return np.array(table.column(name).to_pylist(), dtype=object)


def _time_us(table: Any) -> NDArray[np.int64]:
    import pyarrow as pa

    column = table.column("time").cast(pa.timestamp("us", tz="UTC"))
    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _missing(table: Any, names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in table.column_names]


def _tables(
    paths: list[Path], required: Sequence[str], kind: str
) -> tuple[list[tuple[Path, Any]], int, list[str]]:
    """The files that read as tables with the ``required`` columns; how many vanished before
    they were read; why the others were skipped."""
    found: list[tuple[Path, Any]] = []
    vanished = 0
    skipped: list[str] = []
    for path in paths:
        table = _read(path, skipped)
        if table is None:
            vanished += int(not path.exists())
            continue
        absent = _missing(table, required)
        if absent:
            skipped.append(f"{path.name}: not a {kind} file (no column(s) {absent})")
            continue
        found.append((path, table))
    return found, vanished, skipped


def _read_labels(paths: list[Path], since_us: int | None) -> tuple[_Labels, int, list[str]]:
    parts: list[_Labels] = []
    tables, vanished, skipped = _tables(paths, LABEL_COLUMNS, "labels")
    for _, table in tables:
        table = _since(table, since_us)
        parts.append(
            _Labels(
                time_us=_time_us(table),
                request_id=_strings(table, "request_id"),
                row=_numbers(table, "row", np.int64, -1),
                row_hash=_strings(table, "row_hash"),
                target=_numbers(table, "target", np.float64, np.nan),
            )
        )
    if not parts:
        empty = np.zeros(0, dtype=object)
        return (
            _Labels(np.zeros(0, np.int64), empty, np.zeros(0, np.int64), empty, np.zeros(0)),
            vanished,
            skipped,
        )
    return (
        _Labels(
            time_us=np.concatenate([p.time_us for p in parts]),
            request_id=np.concatenate([p.request_id for p in parts]),
            row=np.concatenate([p.row for p in parts]),
            row_hash=np.concatenate([p.row_hash for p in parts]),
            target=np.concatenate([p.target for p in parts]),
        ),
        vanished,
        skipped,
    )


def _since(table: Any, since_us: int | None) -> Any:
    """The table's rows whose ``time`` is at or after ``since_us`` (all of them when None)."""
    if since_us is None:
        return table
    import pyarrow as pa

    keep = _time_us(table) >= since_us
    return table if keep.all() else table.filter(pa.array(keep))


def _no_rows(n_columns: int, need_hash: bool) -> _Rows:
    empty = np.zeros(0, dtype=object)
    return _Rows(
        X=np.zeros((0, n_columns), np.float32),
        time_us=np.zeros(0, np.int64),
        version=np.zeros(0, np.int32),
        request_id=empty,
        row=np.zeros(0, np.int64),
        hashes=empty if need_hash else None,
    )


def _read_rows(
    paths: list[Path], columns: list[str], *, need_hash: bool, since_us: int | None = None
) -> tuple[_Rows | None, int, list[str]]:
    parts: list[_Rows] = []
    tables, vanished, skipped = _tables(paths, ROW_META, "rows")
    for path, table in tables:
        logged = [n for n in table.column_names if n not in ROW_META]
        if logged != columns:
            skipped.append(f"{path.name}: {column_difference(logged, columns)}")
            continue
        table = _since(table, since_us)
        X = np.column_stack(
            [_numbers(table, name, np.float32, np.nan) for name in columns]
        ).reshape(table.num_rows, len(columns))
        hashes = (
            np.array([d.hex() for d in row_digests(X)], dtype=object)
            if need_hash and len(X)
            else np.zeros(len(X), dtype=object)
        )
        parts.append(
            _Rows(
                X=np.ascontiguousarray(X, dtype=np.float32),
                time_us=_time_us(table),
                version=_numbers(table, "version", np.int32, -1),
                request_id=_strings(table, "request_id"),
                row=_numbers(table, "row", np.int64, -1),
                hashes=hashes,
            )
        )
    if not parts:
        return None, vanished, skipped
    return (
        _Rows(
            X=np.concatenate([p.X for p in parts]),
            time_us=np.concatenate([p.time_us for p in parts]),
            version=np.concatenate([p.version for p in parts]),
            request_id=np.concatenate([p.request_id for p in parts]),
            row=np.concatenate([p.row for p in parts]),
            hashes=np.concatenate([p.hashes for p in parts if p.hashes is not None])
            if need_hash
            else None,
        ),
        vanished,
        skipped,
    )


def column_difference(logged: Sequence[str], card: Sequence[str]) -> str:
    """One line saying how the logged input columns differ from the card's."""
    missing = [c for c in card if c not in logged]
    extra = [c for c in logged if c not in card]
    if missing or extra:
        return "logged input columns differ from the card's: " + ", ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"not in the card {extra}" if extra else "",
            )
            if part
        )
    return f"logged input columns are the card's in another order: {list(logged)}"


# --- joining ---------------------------------------------------------------------------------


def _asof(
    labels: _Labels, use: NDArray[np.bool_], rows: _Rows, keys: dict[str, tuple[Any, Any]]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(logged row, label) index pairs: per label in ``use``, the newest logged row with equal
    ``keys`` (name -> (label values, row values)) answered at or before the label's time."""
    import pandas as pd

    label_idx = np.flatnonzero(use)
    if label_idx.size == 0 or len(rows.time_us) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left = pd.DataFrame(
        {"t": labels.time_us[label_idx], "label": label_idx}
        | {k: list(v[0][label_idx]) for k, v in keys.items()}
    )
    right = pd.DataFrame(
        {"t": rows.time_us, "logged": np.arange(len(rows.time_us))}
        | {k: list(v[1]) for k, v in keys.items()}
    )
    right = right[right[list(keys)].notna().all(axis=1)]
    merged = pd.merge_asof(
        left.sort_values("t", kind="stable"),
        right.sort_values("t", kind="stable"),
        on="t",
        by=list(keys),
        direction="backward",
    )
    found = merged["logged"].notna().to_numpy()
    return (
        merged["logged"].to_numpy()[found].astype(np.int64),
        merged["label"].to_numpy()[found].astype(np.int64),
    )


def _pairs(rows: _Rows, labels: _Labels) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every label that found its logged row, by id or by hash (before duplicates go)."""
    id_logged, id_label = _asof(
        labels,
        labels.by_id,
        rows,
        {"request_id": (labels.request_id, rows.request_id), "row": (labels.row, rows.row)},
    )
    if rows.hashes is None:
        return id_logged, id_label
    hash_logged, hash_label = _asof(
        labels, labels.by_hash, rows, {"row_hash": (labels.row_hash, rows.hashes)}
    )
    return np.concatenate([id_logged, hash_logged]), np.concatenate([id_label, hash_label])


def _join(rows: _Rows, labels: _Labels) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """(logged row, label) pairs, one per labelled row: its newest label (ties: the one read
    last); and how many labels found their row. A label without a target (NaN) finds none."""
    logged, label = _pairs(rows, labels)
    keep = ~np.isnan(labels.target[label])
    logged, label = logged[keep], label[keep]
    joined = len(label)
    order = np.lexsort((label, labels.time_us[label], logged))
    logged, label = logged[order], label[order]
    last = np.ones(len(logged), dtype=bool)
    last[:-1] = logged[1:] != logged[:-1]
    return logged[last], label[last], joined
