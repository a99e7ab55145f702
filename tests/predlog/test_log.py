"""The prediction log writes real Parquet files: read back with pyarrow, they hold what was
served."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from server.batcher import BatchObserver
from server.modelcard import Column, ModelCard, Task, placeholder_card
from server.predlog import PredictionLogExtension
from server.predlog.format import FEATURES_METADATA_KEY, LABELS_SCHEMA, day_of, rows_schema
from tests.predlog.conftest import Starter, finished, read
from tests.support.polling import eventually

NAMES = ["amount", "region", "score"]
COLUMNS = [
    Column(name="amount"),
    Column(name="region", kind="categorical", categories=["n", "s", "e"], unknown="serve"),
    Column(name="score"),
]


def card(name: str = "fraud", task: Task = "binary", version: int = 3) -> ModelCard:
    return msgspec.structs.replace(
        placeholder_card(name, columns=COLUMNS, task=task), version=version
    )


def batch(n: int, first: int = 0, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows whose first column is their global index ``first + i``, and [n, k] scores."""
    rng = np.random.default_rng(first)
    rows = np.column_stack(
        [np.arange(first, first + n), rng.integers(-1, 3, n), rng.random(n)]
    ).astype(np.float32)
    return rows, rng.random((n, k)).astype(np.float32)


def observer(ext: PredictionLogExtension, model_card: ModelCard) -> BatchObserver:
    made = ext.observer_for(model_card)
    assert made is not None
    return made


def day_folders(root: Path) -> list[Path]:
    return [d for m in root.iterdir() for d in m.iterdir()]


def exists(path: Path) -> bool:
    return path.exists()


def make_dir(path: Path) -> None:
    path.mkdir()


async def test_rows_round_trip_with_request_parts(start_log: Starter, log_dir: Path) -> None:
    log = await start_log()
    rows, scores = batch(10)
    rows[2, 2] = np.nan  # missing
    before = time.time()
    # request a: its rows 0-3; request b: its rows 6-11 (split: its first rows were elsewhere)
    observer(log.ext, card()).observe(rows, scores, [("a", 0, 4), ("b", 6, 6)])
    await log.stop()

    [path] = finished(log_dir)
    assert re.fullmatch(rf"rows-\d+-{os.getpid()}-\d+\.parquet", path.name)
    assert path.parent == log_dir / "fraud" / f"day={day_of(before)}"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    table = pq.read_table(path)
    assert table.schema.equals(rows_schema(NAMES))
    assert table.column_names == ["time", "version", "request_id", "row", "answer", *NAMES]
    assert table.schema.metadata[FEATURES_METADATA_KEY] == b'["amount", "region", "score"]'
    got = table.to_pydict()
    assert got["request_id"] == ["a"] * 4 + ["b"] * 6
    assert got["row"] == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert got["version"] == [3] * 10
    assert len(set(got["time"])) == 1
    assert before - 0.001 <= got["time"][0].timestamp() <= time.time()
    np.testing.assert_array_equal(table["answer"].to_numpy(), scores[:, 1])  # positive class
    features = np.column_stack([table[n].to_numpy() for n in NAMES])
    np.testing.assert_array_equal(features, rows)  # NaN in place, region codes incl. -1
    assert log.value("tabserve_prediction_log_rows_total", model="fraud") == 10
    assert log.metrics.registry.get_sample_value("tabserve_prediction_log_bytes") is None  # gone


@pytest.mark.parametrize(("task", "k"), [("multiclass", 3), ("regression", 1)])
async def test_answer_per_task(start_log: Starter, log_dir: Path, task: Task, k: int) -> None:
    log = await start_log()
    rows, scores = batch(50, k=k)
    observer(log.ext, card(task=task)).observe(rows, scores, [("r", 0, 50)])
    await log.stop()
    answers = read(log_dir)["answer"].to_numpy()
    expected = scores.argmax(axis=1) if task == "multiclass" else scores[:, 0]
    np.testing.assert_array_equal(answers, expected.astype(np.float32))


async def test_sampling_rates_and_overrides(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_rate=0.5, prediction_log_rates={"off": 0.0, "all": 1.0})
    assert log.ext.observer_for(card("off")) is None
    half, every = observer(log.ext, card("half")), observer(log.ext, card("all"))
    for first in range(0, 20_000, 500):
        rows, scores = batch(500, first)
        half.observe(rows, scores, [(f"q{first}", 0, 500)])
        every.observe(rows, scores, [(f"q{first}", 0, 500)])
    await log.stop()
    assert not (log_dir / "off").exists()
    assert read(log_dir, model="all").num_rows == 20_000
    sampled = read(log_dir, model="half")
    assert 9_600 <= sampled.num_rows <= 10_400  # 0.5 of 20,000, within ~6 standard deviations
    got = sampled.to_pydict()
    # each sampled row keeps its own request and index ("amount" holds its global index)
    for amount, request_id, row in zip(got["amount"], got["request_id"], got["row"], strict=True):
        assert (request_id, row) == (f"q{int(amount) // 500 * 500}", int(amount) % 500)


async def test_rate_zero_and_variants_observe_nothing(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_rate=0.0, prediction_log_rates={"fraud": 1.0})
    assert log.ext.observer_for(card("other")) is None
    assert log.ext.observer_for(card("fraud"), variant="fast") is None
    assert log.ext.rate_for("fraud") == 1.0 and log.ext.rate_for("other") == 0.0


async def test_rotation_by_rows(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_file_rows=100)
    watch = observer(log.ext, card())
    for first in range(0, 250, 50):
        watch.observe(*batch(50, first), [(f"r{first}", 0, 50)])
    await log.stop()
    sizes = [pq.read_metadata(p).num_rows for p in finished(log_dir)]
    assert sizes == [100, 100, 50]
    np.testing.assert_array_equal(read(log_dir)["amount"].to_numpy(), np.arange(250))


async def test_rotation_by_time(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_file_s=0.2)
    watch = observer(log.ext, card())
    watch.observe(*batch(5), [("r", 0, 5)])
    await eventually(lambda: len(finished(log_dir)) == 1)  # closed without a stop
    watch.observe(*batch(5, 5), [("s", 0, 5)])
    await eventually(lambda: len(finished(log_dir)) == 2)
    assert read(log_dir)["request_id"].to_pylist() == ["r"] * 5 + ["s"] * 5


async def test_stop_flushes_open_files(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_file_s=3_600.0)
    watch = observer(log.ext, card())
    for first in range(0, 300, 30):
        watch.observe(*batch(30, first), [(f"r{first}", 0, 30)])
    log.ext.label(card(), request_id="r0", row=1, row_hash=None, target=1.0)
    await asyncio.sleep(0.1)
    assert finished(log_dir) == []  # open files are hidden until closed
    await log.stop()
    assert read(log_dir).num_rows == 300
    assert read(log_dir, "labels").num_rows == 1
    watch.observe(*batch(3), [("late", 0, 3)])  # after stop: dropped and counted, never raised
    assert (
        log.value("tabserve_prediction_log_dropped_rows_total", model="fraud", reason="stopped")
        == 3
    )


async def test_labels_are_written(start_log: Starter, log_dir: Path) -> None:
    log = await start_log()
    before = time.time()
    log.ext.label(card(version=2), request_id="r1", row=4, row_hash=None, target=1.0)
    log.ext.label(card(version=3), request_id=None, row=None, row_hash="ab12", target=2.5)
    await log.stop()
    [path] = finished(log_dir, "labels")
    assert path.parent == log_dir / "fraud" / f"day={day_of(before)}"
    assert re.fullmatch(rf"labels-\d+-{os.getpid()}-\d+\.parquet", path.name)
    table = pq.read_table(path)
    assert table.schema.equals(LABELS_SCHEMA)
    got = table.to_pydict()
    assert got["version"] == [2, 3]
    assert got["request_id"] == ["r1", None]
    assert got["row"] == [4, None]
    assert got["row_hash"] == [None, "ab12"]
    assert got["target"] == [1.0, 2.5]
    assert all(before - 0.001 <= t.timestamp() <= time.time() for t in got["time"])
    assert log.value("tabserve_prediction_log_labels_total", model="fraud") == 2


async def test_metrics_on_the_app_registry(start_log: Starter, log_dir: Path) -> None:
    log = await start_log(prediction_log_file_rows=5)
    observer(log.ext, card()).observe(*batch(5), [("r", 0, 5)])
    registry = log.metrics.registry
    rows = "tabserve_prediction_log_rows_total"
    await eventually(lambda: registry.get_sample_value(rows, {"model": "fraud"}) == 5)
    assert registry.get_sample_value("tabserve_prediction_log_errors_total", {"op": "write"}) == 0
    assert registry.get_sample_value("tabserve_prediction_log_bytes") == sum(
        p.stat().st_size for p in finished(log_dir)
    )


async def test_disk_bound_holds_and_keeps_the_newest(start_log: Starter, log_dir: Path) -> None:
    max_bytes = 20_000
    log = await start_log(prediction_log_file_rows=20, prediction_log_max_bytes=max_bytes)
    a, b = observer(log.ext, card("a")), observer(log.ext, card("b"))
    for first in range(0, 2_000, 20):
        a.observe(*batch(20, first), [("r", first, 20)])
        b.observe(*batch(20, first), [("r", first, 20)])
        await asyncio.sleep(0)
    await log.stop()
    kept = finished(log_dir)
    total = sum(p.stat().st_size for p in kept)
    assert 0 < total <= max_bytes
    assert len(kept) < 200
    deleted = log.value("tabserve_prediction_log_deleted_files_total")
    assert deleted == 200 - len(kept)
    assert log.value("tabserve_prediction_log_bytes") == total
    for model in ("a", "b"):  # the newest rows of each model are the ones kept
        amounts = read(log_dir, model=model)["amount"].to_numpy()
        np.testing.assert_array_equal(amounts, np.arange(2_000 - len(amounts), 2_000))
    # emptied day folders are removed: only today's (with kept files) are left
    assert all(any(d.iterdir()) for d in day_folders(log_dir))


async def test_vanished_directory_counts_errors_and_recovers(
    start_log: Starter, log_dir: Path
) -> None:
    log = await start_log(prediction_log_file_rows=5)
    watch = observer(log.ext, card())
    shutil.rmtree(log_dir)
    watch.observe(*batch(5), [("lost", 0, 5)])  # never raises
    errors = "tabserve_prediction_log_errors_total"
    await eventually(lambda: log.value(errors, op="write") >= 1)
    assert not exists(log_dir)  # the root is never made again by a write
    assert (
        log.value("tabserve_prediction_log_dropped_rows_total", model="fraud", reason="write_error")
        == 5
    )
    make_dir(log_dir)  # the volume is back: later writes succeed
    watch.observe(*batch(5, 5), [("kept", 0, 5)])
    await log.stop()
    assert read(log_dir)["request_id"].to_pylist() == ["kept"] * 5


async def test_unusable_directory_never_fails_observe(start_log: Starter, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    log = await start_log(prediction_log_dir=blocker / "log", prediction_log_file_rows=5)
    assert log.value("tabserve_prediction_log_errors_total", op="write") == 1  # at start
    watch = observer(log.ext, card())
    for first in range(0, 50, 5):
        watch.observe(*batch(5, first), [("r", 0, 5)])
    log.ext.label(card(), request_id="r", row=0, row_hash=None, target=0.0)
    await log.stop()
    assert log.value("tabserve_prediction_log_errors_total", op="write") >= 2
    assert log.value("tabserve_prediction_log_rows_total", model="fraud") == 0


@pytest.fixture
def read_only_dir(log_dir: Path) -> Iterator[Path]:
    log_dir.mkdir()
    log_dir.chmod(0o555)
    yield log_dir
    log_dir.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
async def test_read_only_directory_counts_errors(start_log: Starter, read_only_dir: Path) -> None:
    log = await start_log(prediction_log_file_rows=5)
    observer(log.ext, card()).observe(*batch(5), [("r", 0, 5)])
    await log.stop()
    assert log.value("tabserve_prediction_log_errors_total", op="write") >= 1
    assert finished(read_only_dir) == []


async def test_bad_input_and_a_full_queue_are_counted_not_raised(
    start_log: Starter, log_dir: Path
) -> None:
    log = await start_log(ext_kwargs={"queue_max_bytes": 2_000})
    watch = observer(log.ext, card())
    watch.observe(None, None, [("r", 0, 1)])  # type: ignore[arg-type]
    assert log.value("tabserve_prediction_log_errors_total", op="observe") == 1
    watch.observe(*batch(4), [("r", 0, 3)])  # parts that do not cover the batch: the writer's
    watch.observe(*batch(1_000), [("big", 0, 1_000)])  # 16 kB: over the queue's bound
    assert (
        log.value("tabserve_prediction_log_dropped_rows_total", model="fraud", reason="queue_full")
        == 1_000
    )
    await log.stop()
    assert log.value("tabserve_prediction_log_errors_total", op="write") == 1
    assert finished(log_dir) == []
