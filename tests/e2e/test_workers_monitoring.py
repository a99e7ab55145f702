"""``tabserve serve --workers 2``: the monitoring view and live quality count both workers.

Shifted rows (the data generators' ``shift``) of a binary model over numeric columns, a
multiclass model with string columns and string labels, and a regressor with string columns go
out one request per connection, so the kernel hands them to either worker; then every row gets
its true label, again one connection each, so most labels land on the worker that did not serve
the row. Whichever worker answers, ``GET .../monitoring`` must count every row and every label,
and give the numbers a single worker gives for the same traffic (``--workers 1``).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.holdout import ReplaySet, load_replay
from server.workershare import share_dir
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

MODELS = ("xgb_small", "returns_xgb", "pricing_sklearn")
ROWS = 120
ENV = {"TABSERVE_CACHE": "false", "TABSERVE_DRIFT_MIN_ROWS": "50"}


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own (either worker may take it)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.request(method, path, **kwargs)


def label(replay: ReplaySet, i: int) -> Any:
    """Row ``i``'s true label as a client sends it: the class value, or the target."""
    y = replay.labels[i]
    return y if replay.task == "regression" else replay.classes[int(y)]


def until(check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    """The first truthy result of ``check`` (a worker's share is at most a second old)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def drive(server: ServerProcess, replays: dict[str, ReplaySet]) -> dict[str, dict[str, Any]]:
    """Send every row, then every label; the snapshots once every row and label is counted."""
    for name, replay in replays.items():
        for i in range(ROWS):
            r = call(
                server,
                "POST",
                f"/v1/models/{name}/predict",
                content=replay.body([i]),
                headers={"Content-Type": "application/json", "X-Request-ID": f"{name}-{i}"},
            )
            assert r.status_code == 200, r.text
    for name, replay in replays.items():
        for i in range(ROWS):
            r = call(
                server,
                "POST",
                f"/v1/models/{name}/feedback",
                json={"request_id": f"{name}-{i}", "label": label(replay, i)},
            )
            assert r.status_code == 200, r.text
            assert r.json()["replaced"] is False

    def snapshots() -> dict[str, dict[str, Any]] | None:
        found = {n: call(server, "GET", f"/v1/models/{n}/monitoring").json() for n in replays}
        counted = all(
            s["window"]["rows"] == ROWS and s["quality"]["labels"] == ROWS for s in found.values()
        )
        return found if counted else None

    found = until(snapshots)
    assert found is not None, "the monitoring view never counted every row and label"
    return found


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": snapshot["status"],
        "rows": snapshot["window"]["rows"],
        "features": [(f["name"], f["psi"], f["ks"], f["status"]) for f in snapshot["features"]],
        "scores": snapshot["scores"],
        "quality": {k: v for k, v in snapshot["quality"].items() if k != "window"},
    }


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def gauge(text: str, name: str, model: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("model") == model
    ]


def test_monitoring_and_live_quality_count_every_worker(model_repo: Path, tmp_path: Path) -> None:
    replays = {name: load_replay(model_repo, name, shift=1.0) for name in MODELS}
    assert {r.task for r in replays.values()} == {"binary", "multiclass", "regression"}

    with ServerProcess(model_repo, env=ENV, log_path=tmp_path / "one.log") as server:
        alone = drive(server, replays)

    two = ServerProcess(model_repo, env=ENV, args=["--workers", "2"], log_path=tmp_path / "two.log")
    with two as server:
        assert server.pid is not None
        shared = share_dir(server.pid)
        together = drive(server, replays)
        # Any worker answers with the same view, however many times it is asked.
        again = [call(server, "GET", "/v1/models/xgb_small/monitoring").json() for _ in range(6)]
        # A second label for a row goes to the worker that served it, and replaces the first.
        relabelled = [
            call(
                server,
                "POST",
                "/v1/models/xgb_small/feedback",
                json={"request_id": f"xgb_small-{i}", "label": label(replays["xgb_small"], i)},
            ).json()["replaced"]
            for i in range(20)
        ]
        unknown = call(
            server, "POST", "/v1/models/xgb_small/feedback", json={"request_id": "x", "label": 1}
        )
        bad = call(
            server,
            "POST",
            "/v1/models/returns_xgb/feedback",
            json={"request_id": "returns_xgb-1", "label": "no-such-class"},
        )
        metrics = call(server, "GET", "/metrics").text

    for name in MODELS:
        snap = together[name]
        workers = snap["workers"]
        assert len(workers) == 2, workers
        assert sum(w["rows"] for w in workers) == ROWS
        assert sum(w["labels"] for w in workers) == ROWS
        assert snap["observed"]["rows_total"] == ROWS
        assert snap["status"] == "drift", snap["top_drifting"]
        assert same(comparable(snap), comparable(alone[name])), (name, snap, alone[name])
    # Both workers served rows, and labels that landed on one worker found the other's rows.
    served: dict[str, int] = {}
    for name in MODELS:
        for w in together[name]["workers"]:
            served[w["worker"]] = served.get(w["worker"], 0) + w["rows"]
    assert len(served) == 2 and min(served.values()) > 0, served
    assert sum(together[n]["observed"]["labels_from_other_workers"] for n in MODELS) > 0
    assert all(s["window"]["rows"] == ROWS for s in again)
    assert all(s["quality"]["labels"] == ROWS for s in again)
    assert relabelled == [True] * 20
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["type"] == "urn:tabserve:problem:unknown-feedback-id"
    assert bad.status_code == 400, bad.text
    # /metrics: one series per model (no worker label), counting both workers.
    for name in MODELS:
        assert gauge(metrics, "tabserve_drift_window_rows", name) == [
            ({"model": name, "version": "1"}, ROWS)
        ]
        assert gauge(metrics, "tabserve_live_labels", name) == [
            ({"model": name, "version": "1"}, ROWS)
        ]
    assert not shared.exists()  # removed when the server exits


def test_a_killed_worker_leaves_the_view(model_repo: Path, tmp_path: Path) -> None:
    """SIGKILL one worker: within a few seconds its window and labels leave the view (its state
    goes stale), the survivor keeps answering, and labels for the rows only it served get 404."""
    replay = load_replay(model_repo, "xgb_small", shift=1.0)
    two = ServerProcess(
        model_repo, env=ENV, args=["--workers", "2"], log_path=tmp_path / "serve.log"
    )
    with two as server:
        assert server.pid is not None
        for i in range(ROWS):
            r = call(
                server,
                "POST",
                "/v1/models/xgb_small/predict",
                content=replay.body([i]),
                headers={"Content-Type": "application/json", "X-Request-ID": f"r-{i}"},
            )
            assert r.status_code == 200, r.text

        def all_rows() -> dict[str, Any] | None:
            snap: dict[str, Any] = call(server, "GET", "/v1/models/xgb_small/monitoring").json()
            return snap if snap["window"]["rows"] == ROWS and len(snap["workers"]) == 2 else None

        snap = until(all_rows)
        assert snap is not None
        rows_of = {int(w["worker"]): w["rows"] for w in snap["workers"]}
        victim = max(rows_of, key=lambda pid: rows_of[pid])  # the one that served most
        survivor_rows = ROWS - rows_of[victim]
        os.kill(victim, signal.SIGKILL)  # a worker of the server this test started

        def without_victim() -> list[dict[str, Any]] | None:
            snaps = [call(server, "GET", "/v1/models/xgb_small/monitoring") for _ in range(4)]
            ok = all(
                s.status_code == 200 and s.json()["window"]["rows"] == survivor_rows for s in snaps
            )
            return [s.json() for s in snaps] if ok else None

        after = until(without_victim)
        assert after is not None, "the killed worker's rows stayed in the view"
        assert all(str(victim) not in {w["worker"] for w in s["workers"]} for s in after)
        answers = [
            call(
                server,
                "POST",
                "/v1/models/xgb_small/feedback",
                json={"request_id": f"r-{i}", "label": label(replay, i)},
            ).status_code
            for i in range(ROWS)
        ]
    assert answers.count(200) == survivor_rows, answers
    assert answers.count(404) == rows_of[victim], answers
