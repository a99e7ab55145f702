"""Retraining triggers on a real app: drift runs the command (once per cool-down, across
workers), a schedule fires on its own, the webhook gets its JSON, and a run still going at
shutdown is stopped."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from export.data import make_fraud
from server.retrain_trigger import RetrainTrigger
from tests.server.conftest import AppClient, MakeClient, core_of
from tests.support.polling import eventually

RECORD = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))"


def trigger_of(client: AppClient) -> RetrainTrigger:
    found = [e for e in client.app.state.extensions if isinstance(e, RetrainTrigger)]
    assert len(found) == 1
    return found[0]


async def send(client: AppClient, X: np.ndarray) -> None:
    for start in range(0, len(X), 50):
        got = await client.post(
            "/v1/models/xgb_small/predict", json={"instances": X[start : start + 50].tolist()}
        )
        assert got.status_code == 200


def outcome(trigger: RetrainTrigger) -> str | None:
    last = trigger.describe("xgb_small")
    return None if last is None else str(last["outcome"])


async def wait_for(check: Any) -> None:
    await eventually(check, within_s=15.0)


MONITOR = {"drift_window_rows": 600, "drift_min_rows": 300, "cache": False}


async def test_drift_runs_the_command_once_per_cooldown(
    make_client: MakeClient, model_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    shutil.copytree(model_repo / "xgb_small", repo / "xgb_small")
    out = tmp_path / "ran.txt"
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    command = f"{sys.executable} {script} {out} {{model}} {{version}} {{reason}} {{since}}"
    calm, _, _ = make_fraud(600, seed=5)
    shifted, _, _ = make_fraud(1200, seed=6, shift=1.0)
    async with make_client(
        models_dir=repo, retrain_command=command, retrain_cooldown_s=3600, **MONITOR
    ) as client:
        await send(client, calm)
        trigger = trigger_of(client)
        trigger.check()
        assert not out.exists() and trigger.describe("xgb_small") is None
        await send(client, shifted)
        await wait_for(lambda: out.exists() and bool(out.read_text()))
        await wait_for(lambda: outcome(trigger) == "exit code 0")
        model, version, reason, since = out.read_text().split()
        # the same drift again, here or in another worker: inside the cool-down, nothing runs
        out.unlink()
        again = trigger.fire("xgb_small", 1, "drift", since, "drift")
        other = RetrainTrigger(trigger.settings, trigger.monitoring)
        other._core = core_of(client)
        from_other = other.fire("xgb_small", 1, "drift", since, "drift")
        metrics = (await client.get("/metrics")).text
    assert (model, version, reason) == ("xgb_small", "1", "drift")
    assert since.startswith("20") and "T" in since
    assert again is False and from_other is False and not out.exists()
    assert (
        'tabserve_retrain_triggers_total{hook="command",model="xgb_small",reason="drift"} 1.0'
        in metrics
    )
    state = json.loads((repo / "xgb_small" / ".retrain-trigger.json").read_text())
    assert state["pid"] == os.getpid()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}/retrain", _Hook.received
    server.shutdown()
    server.server_close()
    thread.join()


async def test_a_schedule_calls_the_webhook(
    make_client: MakeClient, model_repo: Path, tmp_path: Path, webhook: Any
) -> None:
    url, received = webhook
    repo = tmp_path / "models"
    repo.mkdir()
    shutil.copytree(model_repo / "xgb_small", repo / "xgb_small")
    async with make_client(
        models_dir=repo,
        retrain_webhook=url,
        retrain_on_drift=False,
        retrain_every_s=0.2,
        retrain_cooldown_s=0.0,
        **MONITOR,
    ) as client:
        await send(client, make_fraud(300, seed=5)[0])
        await wait_for(lambda: len(received) >= 2)
        last = trigger_of(client).describe("xgb_small")
    first = received[0]
    assert first["model"] == "xgb_small" and first["version"] == 1
    assert first["reason"] == "schedule" and first["status"] in {"ok", "insufficient_data"}
    assert last is not None and last["outcome"] == "HTTP 204"


async def test_a_run_still_going_at_shutdown_is_stopped(
    make_client: MakeClient, model_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    shutil.copytree(model_repo / "xgb_small", repo / "xgb_small")
    command = f"{sys.executable} -c 'import time; time.sleep(120)'"
    async with make_client(models_dir=repo, retrain_command=command, **MONITOR) as client:
        trigger = trigger_of(client)
        assert trigger.fire("xgb_small", 1, "drift", "2026-12-07T00:00:00+00:00", "drift")
        await wait_for(lambda: trigger._runs.get("xgb_small") is not None)
        process = trigger._runs["xgb_small"]
        assert process is not None
        pid = process.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert outcome(trigger) in {"exit code -15", "exit code -9"}
