"""The locustfile, headless and bounded, against a real server process on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.holdout import read_card
from loadtests.results import read_locust_stats
from server.modelcard import BinaryMetrics
from tests.support.ports import free_port
from tests.support.server_process import ServerProcess

LOCUSTFILE = Path(__file__).parents[2] / "loadtests" / "locustfile.py"


def _bounded_headless(host: str, tmp_path: Path) -> list[str]:
    """Headless, 4 users, 4 s, a 1 s stop timeout, CSVs under tmp_path: stops by itself."""
    return [
        "--headless",
        *("-u", "4", "-r", "4", "-t", "4s"),
        *("--host", host, "--only-summary", "--stop-timeout", "1"),
        *("--csv", str(tmp_path / "locust")),
    ]


@pytest.mark.e2e
def test_locustfile_scores_a_real_server(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "accuracy.json"
    with ServerProcess(model_repo, log_path=tmp_path / "server.log") as server:
        # Locust runs as a subprocess: gevent's monkey-patching stays out of the test process.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                *_bounded_headless(server.url, tmp_path),
                "SteadyOneRow",
                "BatchRows",
                "--model",
                "logreg",
                "--models-dir",
                str(model_repo),
                "--batch-size",
                "256",
                "--scores-out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    stream = doc["streams"]["logreg"]
    assert stream["requests"] > 20 and stream["error_rate"] == 0.0
    assert (tmp_path / "locust_stats.csv").is_file()
    # 256-row batches cover the whole hold-out in well under 4 s: the very rows the card was
    # evaluated on, so the metrics must match the offline ones up to ONNX parity.
    assert stream["distinct_rows"] == stream["replay_rows"]
    assert stream["max_repeat_diff"] < 1e-6
    offline = read_card(model_repo, "logreg").metrics
    assert isinstance(offline, BinaryMetrics)
    acc = stream["accuracy"]
    assert acc["pr_auc"] == pytest.approx(offline.pr_auc, abs=1e-4)
    assert acc["roc_auc"] == pytest.approx(offline.roc_auc, abs=1e-4)
    assert acc["precision"] == pytest.approx(offline.precision, abs=1e-4)
    assert acc["recall"] == pytest.approx(offline.recall, abs=1e-4)
    assert acc["f1"] == pytest.approx(offline.f1, abs=1e-4)
    assert doc["total"]["latency_ms"]["p99"] > 0


@pytest.mark.e2e
def test_distributed_run_gathers_worker_scores_on_the_master(
    model_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "accuracy.json"
    master_port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    with ServerProcess(model_repo, log_path=tmp_path / "server.log") as server:
        master = subprocess.Popen(
            [
                *common,
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(master_port),
                "--expect-workers",
                "1",
                *_bounded_headless(server.url, tmp_path),
                "SteadyOneRow",
                "--model",
                "xgb_small",
                "--models-dir",
                str(model_repo),
                "--scores-out",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        worker = subprocess.Popen(
            [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _, master_err = master.communicate(timeout=60)
            worker.wait(timeout=30)
        finally:
            for proc in (master, worker):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
    assert master.returncode == 0, master_err[-3000:]
    doc = json.loads(out.read_text())
    assert doc["distributed"] is True
    stream = doc["streams"]["xgb_small"]
    stats = read_locust_stats(tmp_path / "locust")
    assert stats is not None
    # every request the worker made reached the master's file, scored
    assert stream["requests"] == stats["requests"] > 20
    assert stream["rows_answered"] == stream["requests"] and stream["error_rate"] == 0.0


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("model", "metrics"),
    [
        ("shop_regression", ("mae", "rmse", "r2")),
        ("shop_multiclass", ("accuracy", "macro_f1", "weighted_f1", "log_loss")),
    ],
)
def test_locustfile_sends_typed_rows_and_scores_each_task(
    typed_repo: Path, tmp_path: Path, model: str, metrics: tuple[str, ...]
) -> None:
    """String columns go out as objects; the answers are scored with the task's own metrics,
    which on the whole hold-out must be the card's offline figures (up to ONNX parity)."""
    out = tmp_path / "accuracy.json"
    with ServerProcess(typed_repo, log_path=tmp_path / "server.log") as server:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)),
                *_bounded_headless(server.url, tmp_path),
                "BatchRows",
                *("--model", model, "--models-dir", str(typed_repo)),
                *("--batch-size", "64", "--scores-out", str(out)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stream = json.loads(out.read_text())["streams"][model]
    assert stream["error_rate"] == 0.0 and stream["row_form"] == "objects"
    assert stream["distinct_rows"] == stream["replay_rows"]
    assert stream["max_repeat_diff"] < 1e-4
    acc, offline = stream["accuracy"], stream["offline"]
    assert acc["task"] == offline["task"] == read_card(typed_repo, model).task
    for key in metrics:
        assert acc[key] == pytest.approx(offline[key], rel=1e-4, abs=1e-4), key
