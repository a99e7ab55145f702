"""End to end: drift and live quality seen through a real ``tabserve serve`` process over HTTP.

The model repository is the session's ``model_repo`` (logreg/1 and xgb_small/1 built by the real
export pipeline on fraud data). Unshifted rows are its hold-out split; shifted rows come from the
same generator with ``shift=1.0`` (``export.data.make_fraud``), which moves exactly
``SHIFTED_FEATURES``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from export.data import SHIFTED_FEATURES, make_fraud
from server.batcher import Batcher
from server.metrics import ServerMetrics
from server.modelcard import load_card
from server.monitoring import ModelMonitor
from server.runner import Runner
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

MODEL = "xgb_small"
WINDOW = 1_000


async def predict_all(
    client: httpx.AsyncClient, rows: np.ndarray, prefix: str, singles: int
) -> list[list[float]]:
    """The first ``singles`` rows as concurrent one-row requests (ids ``{prefix}-{i}``), the rest
    as 50-row requests; returns each row's positive score, in row order."""
    positive: list[list[float]] = []

    async def post(i: int, chunk: np.ndarray) -> list[float]:
        r = await client.post(
            f"/v1/models/{MODEL}/predict",
            json={"instances": chunk.tolist()},
            headers={"X-Request-ID": f"{prefix}-{i}"},
        )
        assert r.status_code == 200, r.text
        return [p["scores"][1] for p in r.json()["predictions"]]

    for start in range(0, singles, 50):
        answers = await asyncio.gather(
            *(post(i, rows[i : i + 1]) for i in range(start, min(start + 50, singles)))
        )
        positive.extend(answers)
    for start in range(singles, len(rows), 50):
        positive.append(await post(start, rows[start : start + 50]))
    return positive


async def monitoring(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get(f"/v1/models/{MODEL}/monitoring")
    assert r.status_code == 200, r.text
    snapshot: dict[str, Any] = r.json()
    return snapshot


async def test_drift_and_feedback_over_http(model_repo: Path, tmp_path: Path) -> None:
    card = load_card(model_repo / MODEL / "1")
    with np.load(model_repo / MODEL / "1" / "holdout.npz") as data:
        X, y = data["X"][:WINDOW].astype(np.float32), data["y"][:WINDOW]
    shifted, _, names = make_fraud(WINDOW, seed=7, shift=1.0)
    assert names == card.input.feature_names  # the generator's columns are the model's inputs
    env = {"TABSERVE_DRIFT_WINDOW_ROWS": str(WINDOW), "TABSERVE_CACHE": "false"}
    with ServerProcess(model_repo, env=env, log_path=tmp_path / "serve.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await monitoring(client))["status"] == "insufficient_data"

            # Unshifted hold-out rows: below the watch threshold everywhere.
            await predict_all(client, X, "calm", singles=300)
            calm = await monitoring(client)
            assert calm["window"]["rows"] == WINDOW
            assert calm["observed"]["rows_total"] == WINDOW
            assert calm["status"] == "ok"
            assert all(f["status"] == "ok" for f in calm["features"])
            assert max(f["psi"] for f in calm["features"]) < calm["thresholds"]["psi_watch"]
            assert calm["scores"]["status"] == "ok"

            # Labels over HTTP: live quality equals the confusion counts of the served scores.
            threshold = calm["thresholds"]["decision_threshold"]
            tp = fp = fn = 0
            for i in range(300):
                r = await client.post(
                    f"/v1/models/{MODEL}/feedback",
                    json={"request_id": f"calm-{i}", "label": int(y[i])},
                )
                assert r.status_code == 200, r.text
                predicted = r.json()["score"] >= threshold
                tp += int(predicted and y[i] == 1)
                fp += int(predicted and y[i] == 0)
                fn += int(not predicted and y[i] == 1)
            unknown = await client.post(
                f"/v1/models/{MODEL}/feedback", json={"request_id": "never-sent", "label": 1}
            )
            assert unknown.status_code == 404
            quality = (await monitoring(client))["quality"]
            assert quality["labels"] == 300
            assert (quality["true_positives"], quality["false_positives"]) == (tp, fp)
            assert quality["false_negatives"] == fn
            assert quality["observed_positive_rate"] == pytest.approx(float(y[:300].mean()))

            # Shifted rows push the calm ones out of the window: drift on exactly the shifted
            # features.
            await predict_all(client, shifted, "shifted", singles=200)
            drifted = await monitoring(client)
            metrics = (await client.get("/metrics")).text
    assert drifted["window"]["rows"] == WINDOW
    assert drifted["status"] == "drift"
    by_name = {f["name"]: f for f in drifted["features"]}
    assert {n for n, f in by_name.items() if f["status"] == "drift"} == set(SHIFTED_FEATURES)
    for name, f in by_name.items():
        if name not in SHIFTED_FEATURES:
            assert f["status"] == "ok", (name, f)
    assert {f["name"] for f in drifted["top_drifting"][:4]} == set(SHIFTED_FEATURES)
    assert drifted["observed"]["errors"] == 0
    assert (
        f'tabserve_drift_feature_psi{{feature="merchant_risk_score",model="{MODEL}",version="1"}}'
        in metrics
    )
    assert f'tabserve_drift_status{{model="{MODEL}",version="1"}} 2.0' in metrics
    log = (tmp_path / "serve.log").read_text()
    assert f"model {MODEL}/1 entered drift" in log


async def test_a_monitor_that_cannot_be_built_does_not_stop_serving(
    model_repo: Path, tmp_path: Path
) -> None:
    with np.load(model_repo / MODEL / "1" / "holdout.npz") as data:
        rows = data["X"][:3].astype(np.float32)
    env = {"TABSERVE_DRIFT_WINDOW_ROWS": "0", "TABSERVE_CACHE": "false"}
    with ServerProcess(model_repo, env=env, log_path=tmp_path / "serve.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answer = await client.post(
                f"/v1/models/{MODEL}/predict", json={"instances": rows.tolist()}
            )
            status = await client.get(f"/v1/models/{MODEL}/monitoring")
    assert answer.status_code == 200
    assert len(answer.json()["predictions"]) == 3
    assert status.status_code == 503
    assert "event=monitor_unavailable" in (tmp_path / "serve.log").read_text()


async def test_a_failing_monitor_never_fails_a_prediction(
    model_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: a card whose reference lacks a feature makes every fold of the monitor fail;
    the batcher still answers every request with the model's own scores."""
    vdir = model_repo / MODEL / "1"
    card = load_card(vdir)
    broken = msgspec.structs.replace(
        card,
        reference=msgspec.structs.replace(card.reference, features=card.reference.features[:-1]),
    )
    runner = Runner(vdir / card.onnx.file, card)
    monitor = ModelMonitor(broken)
    batcher = Batcher(runner, metrics=ServerMetrics(), max_batch_rows=32, observer=monitor)
    with np.load(vdir / "holdout.npz") as data:
        X = data["X"][:600].astype(np.float32)
    batcher.start()
    try:
        deadline = time.monotonic() + 30
        singles = await asyncio.gather(
            *(
                batcher.predict(X[i : i + 1], deadline=deadline, request_id=f"r{i}")
                for i in range(500)
            )
        )
        many = await batcher.predict(X[500:], deadline=deadline, request_id="many")
    finally:
        await batcher.stop(timeout_s=5)
    expected = runner.run(X)
    np.testing.assert_array_equal(np.concatenate([*singles, many]), expected)
    assert batcher.stats.hook_errors == 0
    monitor.flush()
    assert monitor.errors > 0
    assert monitor.rows_total == 0
    assert any("fold failed" in r.getMessage() for r in caplog.records)
