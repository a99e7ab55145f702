"""The prediction log's files: where they are, what they are named, what their columns are.

This module is the contract between the server, which writes the log, and its readers (the
export side joins rows to labels); both import the names and schemas from here.

Layout under the log directory (``TABSERVE_PREDICTION_LOG_DIR``)::

    <dir>/<model name>/day=YYYY-MM-DD/rows-<epoch_ms>-<pid>-<counter>.parquet
    <dir>/<model name>/day=YYYY-MM-DD/labels-<epoch_ms>-<pid>-<counter>.parquet

- ``day``: the UTC day of the rows' time (rows files) or of the labels' arrival (labels files);
- ``epoch_ms``: when the writing process opened the file (milliseconds since the epoch, UTC);
  files sort oldest first by it, and the disk bound deletes in that order;
- ``pid``: the writing process (several ``--workers`` write into the same directory);
- ``counter``: a number that the process increases with each file it opens.

A file is written under a hidden name (the final name with a leading ``.``) and renamed to its
final name once closed, so a finished file is always complete; readers skip names that start
with ``.``. A rows file holds the rows of one model version (one input schema).

Rows files (:func:`rows_schema`), one row per logged served row:

==============  ==========================  ===================================================
column          type                        meaning
==============  ==========================  ===================================================
time            timestamp[us, tz=UTC]       when the batch holding the row was answered
version         int32                       the model version that answered it
request_id      string                      the request it came in (``X-Request-ID``)
row             int32                       its index within that request
answer          float32                     binary: the positive-class score; multiclass: the
                                            predicted class index; regression: the prediction
<feature> ...   float32                     the row as the model saw it, one column per input
                                            column in the card's order: numbers as given, a
                                            category as its index (-1 unseen), NaN missing
==============  ==========================  ===================================================

The feature columns come after the five fixed ones, in the card's order; the schema's metadata
key ``tabserve.features`` lists their names as JSON (a feature named like a fixed column keeps
its name: read such a model's features by position).

Labels files (:data:`LABELS_SCHEMA`), one row per label given through ``POST .../feedback``:

==============  ==========================  ===================================================
time            timestamp[us, tz=UTC]       when the label arrived
version         int32                       the version whose row it labels
request_id      string (nullable)           the labelled row's request ...
row             int32 (nullable)            ... and its index within it
row_hash        string (nullable)           or the labelled row's hash
target          float64                     classifiers: the class index; regression: the value
==============  ==========================  ===================================================
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

ROWS = "rows"
"""File kind (and name prefix) of served rows."""
LABELS = "labels"
"""File kind (and name prefix) of labels."""
SUFFIX = ".parquet"
HIDDEN = "."
"""Prefix of a file still being written."""
DAY_PREFIX = "day="

TIME_TYPE = pa.timestamp("us", tz="UTC")
FIXED_ROW_COLUMNS = ("time", "version", "request_id", "row", "answer")
"""The columns of a rows file before its features."""
FEATURES_METADATA_KEY = b"tabserve.features"
"""Schema metadata of a rows file: JSON list of its feature columns' names, in order."""

LABELS_SCHEMA = pa.schema(
    [
        pa.field("time", TIME_TYPE, nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int32()),
        pa.field("row_hash", pa.string()),
        pa.field("target", pa.float64(), nullable=False),
    ]
)

_NAME = re.compile(r"(rows|labels)-(\d+)-(\d+)-(\d+)\.parquet")


def rows_schema(feature_names: Sequence[str]) -> pa.Schema:
    """The schema of a rows file of a model with these input columns (in card order)."""
    fixed = [
        pa.field("time", TIME_TYPE, nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("answer", pa.float32(), nullable=False),
    ]
    features = [pa.field(name, pa.float32()) for name in feature_names]
    metadata = {FEATURES_METADATA_KEY: json.dumps(list(feature_names)).encode()}
    return pa.schema(fixed + features, metadata=metadata)


def day_of(epoch_s: float) -> str:
    """``YYYY-MM-DD``: the UTC day of a time."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


def day_dir(root: Path, model: str, day: str) -> Path:
    return root / model / f"{DAY_PREFIX}{day}"


def file_name(kind: str, epoch_ms: int, pid: int, counter: int) -> str:
    """The final name of a log file (its hidden name while written: ``HIDDEN + name``)."""
    return f"{kind}-{epoch_ms}-{pid}-{counter}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class LogFile:
    """A file of the log, parsed from its path."""

    path: Path
    kind: str
    epoch_ms: int
    pid: int
    counter: int
    hidden: bool

    @property
    def model(self) -> str:
        return self.path.parent.parent.name

    @property
    def day(self) -> str:
        return self.path.parent.name.removeprefix(DAY_PREFIX)


def parse(path: Path) -> LogFile | None:
    """The log file at ``path``, or None when its name is not one of the log's."""
    name = path.name
    hidden = name.startswith(HIDDEN)
    match = _NAME.fullmatch(name[1:] if hidden else name)
    if match is None:
        return None
    kind, epoch_ms, pid, counter = match.groups()
    return LogFile(path, kind, int(epoch_ms), int(pid), int(counter), hidden)


def log_files(root: Path, *, hidden: bool = False) -> Iterator[LogFile]:
    """The log's files under ``root`` (finished ones; also those being written with
    ``hidden``), in no particular order. Folders that vanish meanwhile are skipped."""
    for model in _dirs(root):
        for day in _dirs(model):
            if not day.name.startswith(DAY_PREFIX):
                continue
            try:
                entries = list(os.scandir(day))
            except OSError:
                continue
            for entry in entries:
                found = parse(Path(entry.path))
                if found is not None and (hidden or not found.hidden):
                    yield found


def _dirs(parent: Path) -> list[Path]:
    try:
        with os.scandir(parent) as it:
            return [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
