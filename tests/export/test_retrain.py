"""``tabserve retrain``: the prediction log reader's join, and retraining a real small model on
real Parquet log files (written as the server's prediction log writes them)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.typing import NDArray

from export.build import BuildSettings, build_model
from export.data import FRAUD_FEATURES, fraud_dataset, make_fraud
from export.prediction_log import LogFiles, PredictionLogError, log_files, read_labelled
from export.progress import Progress
from export.recipes import RECIPES
from export.retrain import BYO_REFUSAL, RetrainSettings, TooFewLabels, decide, retrain
from server.cli import main
from server.modelcard import CARD_FILE, encode_card, load_card
from server.monitoring.feedback import row_hash
from server.routing import read_events, read_routing

MODEL = "xgb_small"
START = np.datetime64("2026-03-01T00:00:00", "us")
MINUTE = np.timedelta64(60, "s")
COLUMNS = ["a", "b"]
"""Input columns of the reader tests' (model-less) log."""


def _ts(times: NDArray[np.datetime64]) -> pa.Array:
    return pa.array(np.asarray(times, dtype="datetime64[us]"), pa.timestamp("us", tz="UTC"))


def write_rows(
    day: Path,
    X: NDArray[np.float32],
    times: NDArray[np.datetime64],
    ids: Sequence[str],
    rows: Sequence[int],
    columns: Sequence[str],
    name: str = "rows-1-1-1.parquet",
) -> Path:
    """A rows file as the server writes it: time, version, request_id, row, answer, inputs."""
    day.mkdir(parents=True, exist_ok=True)
    n = len(X)
    table = {
        "time": _ts(times),
        "version": pa.array(np.ones(n, np.int32)),
        "request_id": pa.array(list(ids), pa.string()),
        "row": pa.array(np.asarray(rows, np.int32)),
        "answer": pa.array(np.zeros(n, np.float32)),
    } | {c: pa.array(np.asarray(X[:, j], np.float32)) for j, c in enumerate(columns)}
    pq.write_table(pa.table(table), day / name)
    return day / name


def write_labels(
    day: Path,
    times: NDArray[np.datetime64],
    targets: Sequence[float] | NDArray[np.int64],
    ids: Sequence[str | None] | None = None,
    rows: Sequence[int | None] | None = None,
    hashes: Sequence[str | None] | None = None,
    name: str = "labels-1-1-1.parquet",
) -> Path:
    day.mkdir(parents=True, exist_ok=True)
    n = len(targets)
    table = {
        "time": _ts(times),
        "version": pa.array(np.ones(n, np.int32)),
        "request_id": pa.array(list(ids) if ids is not None else [None] * n, pa.string()),
        "row": pa.array(list(rows) if rows is not None else [None] * n, pa.int32()),
        "row_hash": pa.array(list(hashes) if hashes is not None else [None] * n, pa.string()),
        "target": pa.array(np.asarray(targets, np.float64)),
    }
    pq.write_table(pa.table(table), day / name)
    return day / name


def _minutes(*offsets: int) -> NDArray[np.datetime64]:
    return START + np.asarray(offsets) * MINUTE


# --- the reader -------------------------------------------------------------------------------


def test_labels_join_by_request_id_and_row(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    write_rows(day, X, _minutes(0, 0, 1), ["r1", "r1", "r2"], [0, 1, 0], COLUMNS)
    write_labels(day, _minutes(5, 6), [1.0, 0.0], ids=["r2", "r1"], rows=[0, 1])
    log = read_labelled(tmp_path, "m", COLUMNS)
    assert log.X.tolist() == [[3, 4], [5, 6]]  # oldest answered first
    assert log.y.tolist() == [0.0, 1.0]
    assert (log.rows_logged, log.labels, log.matched, log.unmatched) == (3, 2, 2, 0)


def test_a_reused_id_takes_the_newest_row_logged_before_the_label(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 1], [2, 2]], np.float32)
    write_rows(day, X, _minutes(0, 10), ["r", "r"], [0, 0], COLUMNS)
    write_labels(day, _minutes(5, 15), [0.0, 1.0], ids=["r", "r"], rows=[0, 0])
    log = read_labelled(tmp_path, "m", COLUMNS)
    assert log.X.tolist() == [[1, 1], [2, 2]] and log.y.tolist() == [0.0, 1.0]


def test_labels_join_by_row_hash(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 2], [-0.0, np.nan], [7, 8]], np.float32)
    write_rows(day, X, _minutes(0, 1, 2), ["a", "b", "c"], [0, 0, 0], COLUMNS)
    # the canonical hash: -0.0 as 0.0, any NaN as one NaN (as the server's feedback hashes)
    hashes = [row_hash(np.array([0.0, np.nan], np.float32)), row_hash(X[2])]
    write_labels(day, _minutes(9, 9), [1.0, 0.0], hashes=hashes)
    log = read_labelled(tmp_path, "m", COLUMNS)
    assert log.y.tolist() == [1.0, 0.0] and log.X[1].tolist() == [7, 8]
    assert log.matched == 2 and log.unmatched == 0


def test_newest_label_wins_and_unlogged_labels_are_dropped(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 2], [3, 4]], np.float32)
    write_rows(day, X, _minutes(0, 1), ["r1", "r2"], [0, 0], COLUMNS)
    write_labels(
        day,
        _minutes(7, 5, 6, 6, 6),
        [1.0, 0.0, 1.0, 1.0, 0.0],
        ids=["r1", "r1", "gone", "r2", None],  # r1 twice; an id never logged (sampled out)
        rows=[0, 0, 0, 3, None],  # r2 has no row 3; the last label names no row
    )
    write_labels(
        tmp_path / "m" / "day=2026-03-02",
        _minutes(2000),
        [1.0],
        hashes=[row_hash(np.array([9, 9], np.float32))],  # a hash of a row never logged
        name="labels-2-1-1.parquet",
    )
    log = read_labelled(tmp_path, "m", COLUMNS)
    assert log.X.tolist() == [[1, 2]] and log.y.tolist() == [1.0]  # the newer of r1's labels
    assert (log.labels, log.matched, log.unmatched, log.superseded) == (6, 1, 4, 1)


def test_a_label_before_its_row_was_answered_matches_nothing(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    write_rows(day, np.ones((1, 2), np.float32), _minutes(10), ["r"], [0], COLUMNS)
    write_labels(day, _minutes(5), [1.0], ids=["r"], rows=[0])
    assert read_labelled(tmp_path, "m", COLUMNS).unmatched == 1


def test_files_being_written_are_skipped_and_vanished_files_are_counted(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 2], [3, 4]], np.float32)
    write_rows(day, X[:1], _minutes(0), ["r1"], [0], COLUMNS)
    write_rows(day, X[1:], _minutes(1), ["r2"], [0], COLUMNS, name=".rows-2-1-1.parquet")
    write_labels(day, _minutes(5, 5), [1.0, 1.0], ids=["r1", "r2"], rows=[0, 0])
    files = log_files(tmp_path, "m")
    assert [p.name for p in files.rows] == ["rows-1-1-1.parquet"]
    # a file deleted (by the log's disk bound) between listing and reading
    listed = LogFiles(rows=[*files.rows, day / "rows-3-1-1.parquet"], labels=files.labels)
    log = read_labelled(tmp_path, "m", COLUMNS, files=listed)
    assert log.vanished_files == 1 and log.matched == 1 and log.unmatched == 1


def test_logged_columns_must_be_the_cards(tmp_path: Path) -> None:
    day = tmp_path / "m" / "day=2026-03-01"
    write_rows(day, np.ones((1, 2), np.float32), _minutes(0), ["r1"], [0], ["a", "c"])
    write_labels(day, _minutes(5), [1.0], ids=["r1"], rows=[0])
    with pytest.raises(PredictionLogError, match=r"missing \['b'\], not in the card \['c'\]"):
        read_labelled(tmp_path, "m", COLUMNS)
    write_rows(
        day, np.ones((1, 2), np.float32), _minutes(1), ["r2"], [0], COLUMNS, "rows-2.parquet"
    )
    log = read_labelled(tmp_path, "m", COLUMNS)  # the matching file is read, the other skipped
    assert log.rows_logged == 1 and len(log.skipped) == 1 and "missing ['b']" in log.skipped[0]


def test_since_reads_neither_earlier_days_nor_earlier_rows(tmp_path: Path) -> None:
    earlier = tmp_path / "m" / "day=2026-02-28"
    earlier.mkdir(parents=True)
    (earlier / "rows-1-1-1.parquet").write_bytes(b"not parquet")  # read, it would be skipped
    day = tmp_path / "m" / "day=2026-03-01"
    X = np.array([[1, 1], [2, 2], [3, 3]], np.float32)
    write_rows(day, X, _minutes(0, 10, 20), ["a", "b", "c"], [0, 0, 0], COLUMNS)
    write_labels(day, _minutes(5, 25, 25, 2), [1, 0, 1, 0], ids=["a", "b", "c", "x"], rows=[0] * 4)
    since = datetime(2026, 3, 1, 0, 10, tzinfo=UTC)
    assert [p.parent.name for p in log_files(tmp_path, "m", since).rows] == ["day=2026-03-01"]
    log = read_labelled(tmp_path, "m", COLUMNS, since=since)
    assert log.X.tolist() == [[2, 2], [3, 3]] and log.y.tolist() == [0.0, 1.0]
    assert log.skipped == () and log.rows_logged == 2
    assert (log.labels, log.unmatched) == (2, 0)  # labels that arrived before it: unread
    later = read_labelled(tmp_path, "m", COLUMNS, since=datetime(2026, 3, 2, tzinfo=UTC))
    assert (later.rows_logged, later.matched) == (0, 0)  # nothing since: no rows, not an error


def test_the_margin_decides() -> None:
    assert decide("binary", 0.50, 0.52, 0.01)[0]
    better, reason = decide("binary", 0.50, 0.505, 0.01)
    assert not better and "below the margin" in reason
    assert decide("multiclass", 0.5, 0.49, 0.0)[0] is False
    assert decide("regression", 10.0, 9.8, 0.01)[0]  # 2% lower MAE
    assert not decide("regression", 10.0, 9.95, 0.01)[0]


# --- retraining a real model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with xgb_small version 1, trained on unshifted fraud data."""
    models = tmp_path_factory.mktemp("served") / "models"
    settings = BuildSettings(models_dir=models, n_jobs=1, cost_budget_s=0.02)
    build_model(RECIPES[MODEL], fraud_dataset(3_000, seed=0), settings)
    return models


@pytest.fixture
def models(served: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(served, dest)
    return dest


def write_fraud_log(log_dir: Path, n: int, shift: float) -> None:
    """``n`` rows of fraud traffic at ``shift``, one a minute in requests of 4 rows over two
    days (two rows files), all labelled an hour later by (request_id, row)."""
    X, y, _ = make_fraud(n, seed=1, shift=shift)
    times = START + np.arange(n) * MINUTE
    ids = [f"req-{i // 4}" for i in range(n)]
    rows = [i % 4 for i in range(n)]
    half = n // 2
    for part, (lo, hi) in enumerate([(0, half), (half, n)], start=1):
        day = log_dir / MODEL / f"day=2026-03-0{part}"
        write_rows(day, X[lo:hi], times[lo:hi], ids[lo:hi], rows[lo:hi], FRAUD_FEATURES)
        write_labels(day, times[lo:hi] + 60 * MINUTE, y[lo:hi], ids=ids[lo:hi], rows=rows[lo:hi])


def _day(t: np.datetime64) -> str:
    return str(t.astype("datetime64[D]"))


def write_log(
    log_dir: Path,
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    times: NDArray[np.datetime64],
    labelled: slice = slice(None),
) -> None:
    """Rows in the day folders of their time, in requests of 4 rows; the ``labelled`` ones
    labelled an hour later, in the day folders of that time (files named after the slice)."""
    ids = np.array([f"req-{i // 4}" for i in range(len(X))])
    rows = np.arange(len(X)) % 4
    days = np.array([_day(t) for t in times])
    for day in dict.fromkeys(days):
        at = days == day
        folder = log_dir / MODEL / f"day={day}"
        write_rows(folder, X[at], times[at], list(ids[at]), list(rows[at]), FRAUD_FEATURES)
    arrived = times[labelled] + 60 * MINUTE
    label_days = np.array([_day(t) for t in arrived])
    name = f"labels-{labelled.start or 0}-1-1.parquet"
    for day in dict.fromkeys(label_days):
        at = label_days == day
        write_labels(
            log_dir / MODEL / f"day={day}",
            arrived[at],
            y[labelled][at],
            ids=list(ids[labelled][at]),
            rows=list(rows[labelled][at]),
            name=name,
        )


DRIFT = START + 600 * MINUTE
"""When the shifted traffic starts in the tests of --since: 2026-03-01T10:00Z."""


def write_drifted_log(log_dir: Path, labelled: slice = slice(None)) -> None:
    """1,800 rows of an older concept (shifted traffic whose labels are the opposite) answered
    up to DRIFT, from the day before, then 2,400 rows of shifted traffic as write_fraud_log's;
    and an unreadable rows file two days before."""
    X_old, y_old, _ = make_fraud(1_800, seed=2, shift=1.0)
    X_new, y_new, _ = make_fraud(2_400, seed=1, shift=1.0)
    X = np.concatenate([X_old, X_new]).astype(np.float32)
    y = np.concatenate([1 - y_old, y_new]).astype(np.int64)
    times = DRIFT + (np.arange(len(X)) - len(X_old)) * MINUTE
    write_log(log_dir, X, y, times, labelled)
    garbage = log_dir / MODEL / "day=2026-02-27"
    garbage.mkdir(parents=True)
    (garbage / "rows-1-1-1.parquet").write_bytes(b"not parquet")


def _cli(models: Path, log_dir: Path, *options: str) -> int:
    return main(
        ["retrain", MODEL, "--models-dir", str(models), "--log-dir", str(log_dir), *options]
    )


@pytest.mark.parametrize("shadow", [False, True], ids=["pinned", "pinned+shadow"])
def test_a_candidate_trained_on_shifted_traffic_is_published(
    models: Path, tmp_path: Path, shadow: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fraud_log(tmp_path / "log", 2_400, shift=1.0)
    code = _cli(models, tmp_path / "log", "--json", *(["--shadow"] if shadow else []))
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["published_version"] == 2 and result["better"]
    assert result["candidate"] >= result["serving"] + 0.01
    assert result["window"]["rows"] == 720 and result["train_logged"] == 1_680
    assert read_routing(models, MODEL).primary == 1  # the candidate does not answer yet
    assert read_routing(models, MODEL).shadow == (2 if shadow else None)
    assert [(e.action, e.by) for e in read_events(models, MODEL)] == [("pin", "retrain")] + (
        [("shadow", "retrain")] if shadow else []
    )
    card = load_card(models / MODEL / "2")
    assert card.metrics.pr_auc == pytest.approx(result["candidate"])  # type: ignore[union-attr]
    assert card.params["retrained_from"] == 1 and card.dataset.rows_test == 720
    assert "prediction log" in card.dataset.source


def test_a_candidate_not_better_by_the_margin_is_not_published(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fraud_log(tmp_path / "log", 2_400, shift=1.0)
    assert _cli(models, tmp_path / "log", "--margin", "1.0") == 1
    out = capsys.readouterr().out
    assert "not published: candidate PR-AUC" in out and "below the margin 1.0000" in out
    assert not (models / MODEL / "2").exists() and read_routing(models, MODEL).primary is None


def test_dry_run_with_original_data_compares_and_publishes_nothing(
    models: Path, tmp_path: Path
) -> None:
    write_fraud_log(tmp_path / "log", 2_400, shift=1.0)
    settings = RetrainSettings(
        MODEL, models, tmp_path / "log", with_original=True, dry_run=True, n_jobs=1
    )
    result = retrain(settings)
    assert result.better and result.published_version is None
    assert result.train_original == 2_400  # the original build's train + validation rows
    assert not (models / MODEL / "2").exists() and read_routing(models, MODEL).primary is None


def test_bring_your_own_models_are_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = load_card(models / MODEL / "1")
    (models / MODEL / "1" / CARD_FILE).write_bytes(
        encode_card(msgspec.structs.replace(card, recipe="byo"))
    )
    write_fraud_log(tmp_path / "log", 400, shift=1.0)
    assert _cli(models, tmp_path / "log") == 2
    assert capsys.readouterr().err == f"tabserve retrain: error: {BYO_REFUSAL}\n"


def test_too_few_labels_are_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fraud_log(tmp_path / "log", 120, shift=1.0)
    assert _cli(models, tmp_path / "log") == 2
    err = capsys.readouterr().err
    assert err.startswith("tabserve retrain: error: only 120 labelled logged rows")
    assert "--min-labels is 200" in err and err.count("\n") == 1


def test_too_few_positives_are_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fraud_log(tmp_path / "log", 300, shift=0.0)
    assert _cli(models, tmp_path / "log", "--min-labels", "100") == 2
    assert "too few positives" in capsys.readouterr().err


def test_a_log_dir_is_required(
    models: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TABSERVE_PREDICTION_LOG_DIR", raising=False)
    assert main(["retrain", MODEL, "--models-dir", str(models)]) == 2
    assert "TABSERVE_PREDICTION_LOG_DIR" in capsys.readouterr().err


def test_retrain_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["retrain", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for option in (
        *("--eval-fraction", "--min-labels", "--with-original", "--margin", "--shadow"),
        *("--since", "--wait-s", "--poll-s"),
    ):
        assert option in out


def test_since_trains_and_evaluates_only_on_the_rows_after_it(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_drifted_log(tmp_path / "log")
    code = _cli(models, tmp_path / "log", "--json", "--dry-run", "--since", "2026-03-01T10:00:00Z")
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["better"], result
    assert result["window"]["rows"] == 720 and result["train_logged"] == 1_680
    assert result["rows_logged"] == 2_400 and result["since"] == "2026-03-01T10:00:00Z"
    assert result["window"]["first"] >= "2026-03-01T10:00:00Z"
    assert result["notes"] == []  # the unreadable file is in a day before it: not read
    # the whole log: the older concept dominates the training rows, the candidate is worse
    assert _cli(models, tmp_path / "log", "--json", "--dry-run") == 1
    whole = json.loads(capsys.readouterr().out)
    assert whole["train_logged"] == 2_940 and whole["candidate"] < whole["serving"]
    assert any("rows-1-1-1.parquet: unreadable" in note for note in whole["notes"])


class FakeClock:
    """A monotonic clock that only moves when slept on; ``on_sleep`` runs after each sleep."""

    def __init__(self, on_sleep: Callable[[int], None] = lambda n: None) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


def test_labels_arriving_during_the_wait_are_used(models: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    write_drifted_log(log_dir, labelled=slice(0, 1_900))  # 100 rows since DRIFT labelled

    def arrive(polls: int) -> None:
        if polls == 2:  # the rest of the labels, written while the command waits
            write_drifted_log(tmp_path / "late", labelled=slice(1_900, None))
            for path in (tmp_path / "late" / MODEL).glob("day=*/labels-*.parquet"):
                shutil.copy(path, log_dir / MODEL / path.parent.name / path.name)

    clock = FakeClock(arrive)
    stream = io.StringIO()
    settings = RetrainSettings(
        MODEL,
        models,
        log_dir,
        min_labels=2_000,
        dry_run=True,
        n_jobs=1,
        since=datetime(2026, 3, 1, 10, tzinfo=UTC),
        wait_s=600,
        poll_s=5,
    )
    result = retrain(
        settings, Progress(MODEL, stream=stream), monotonic=clock.monotonic, sleep=clock.sleep
    )
    assert result.better and result.labelled_rows == 2_400 and result.waited_s == 10.0
    assert clock.sleeps == [5, 5]
    waiting = [line for line in stream.getvalue().splitlines() if "waiting" in line]
    assert waiting == [
        f"[1/1] {MODEL}: waiting for labels: 100 of 2000 labelled rows since "
        f"2026-03-01T10:00:00Z; {left} s left"
        for left in (600, 595)
    ]


def test_too_few_positives_after_the_wait_are_refused(models: Path, tmp_path: Path) -> None:
    write_fraud_log(tmp_path / "log", 300, shift=0.0)
    clock = FakeClock()
    settings = RetrainSettings(
        MODEL, models, tmp_path / "log", min_labels=100, n_jobs=1, wait_s=12, poll_s=5
    )
    with pytest.raises(TooFewLabels, match=r"too few positives: .* \(after waiting 12 s\)$"):
        retrain(settings, monotonic=clock.monotonic, sleep=clock.sleep)
    assert clock.sleeps == [5, 5, 2]  # the last poll at the end of the wait


def test_the_wait_ends_in_the_usual_refusal(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_fraud_log(tmp_path / "log", 120, shift=1.0)
    assert _cli(models, tmp_path / "log", "--wait-s", "0.2", "--poll-s", "0.1") == 2
    err = capsys.readouterr().err.splitlines()
    assert 1 <= len(err) - 1 <= 3  # a line per poll (2, unless a read is slow), the refusal
    assert all("waiting for labels: 120 of 200 labelled rows; " in line for line in err[:-1])
    assert err[-1].startswith("tabserve retrain: error: only 120 labelled logged rows")
    assert err[-1].endswith("--min-labels is 200 (after waiting 0.2 s)")


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00Z", ""])
def test_an_unparsable_since_is_one_line(
    since: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli(tmp_path, tmp_path, "--since", since)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exc.value.code == 2 and len(errors) == 1
    assert (
        f"argument --since: expected an ISO 8601 time like 2026-12-07T15:02:11+00:00, got {since!r}"
        in errors[0]
    )
