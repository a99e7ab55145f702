"""Registry: bad models are refused while others serve; reload under load: nothing lost or mixed."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from server.modelcard import encode_card, load_card
from tests.server.conftest import MakeClient, core_of

TOKEN = {"Authorization": "Bearer reload-token"}


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(model_repo, dest)
    return dest


def publish_as(repo: Path, source: str, name: str, version: int) -> Path:
    """Publish ``source``/1's ONNX as ``name``/``version`` (a different model: other scores)."""
    card = load_card(repo / source / "1")
    card = msgspec.structs.replace(card, name=name, version=version)
    dest = repo / name / str(version)
    tmp = repo / name / f".tmp-{version}"
    tmp.mkdir(parents=True)
    shutil.copy(repo / source / "1" / "model.onnx", tmp / "model.onnx")
    (tmp / "model.json").write_bytes(encode_card(card))
    tmp.rename(dest)  # publish atomically, as the exporter does
    return dest


async def test_a_bad_model_is_refused_while_others_serve(
    make_client: MakeClient, repo: Path, holdout: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    onnx = repo / "xgb_small" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"tampered")
    caplog.set_level(logging.ERROR, logger="tabserve")
    async with make_client(models_dir=repo) as client:
        ok = await client.post(
            "/v1/models/logreg/predict", json={"instances": holdout[:1].tolist()}
        )
        gone = await client.post(
            "/v1/models/xgb_small/predict", json={"instances": holdout[:1].tolist()}
        )
        ready = await client.get("/health/ready")
    assert ok.status_code == 200 and ready.status_code == 200
    assert gone.status_code == 404
    refused = [r.getMessage() for r in caplog.records if "event=model_refused" in r.getMessage()]
    assert len(refused) == 1
    assert "xgb_small/1" in refused[0] and "sha256" in refused[0]


async def test_not_ready_without_models(make_client: MakeClient, tmp_path: Path) -> None:
    async with make_client(models_dir=tmp_path) as client:
        r = await client.get("/health/ready")
        v2 = await client.get("/v2/health/ready")
    assert r.status_code == 503 and r.json()["type"] == "urn:tabserve:problem:model-not-ready"
    assert (v2.status_code, v2.json()) == (503, {"ready": False})


async def test_reload_under_load_loses_nothing_and_never_mixes_versions(
    make_client: MakeClient, repo: Path, holdout: np.ndarray, reference: Any
) -> None:
    rows = holdout[:200]
    expected = {1: reference("logreg").scores(rows), 2: reference("xgb_small").scores(rows)}
    assert not np.allclose(expected[1], expected[2])
    responses: list[Any] = []
    stop = asyncio.Event()

    async def client_loop(client: Any, worker: int) -> None:
        i = worker
        while not stop.is_set():
            a = (i * 7) % 190
            r = await client.post(
                "/v1/models/logreg/predict", json={"instances": rows[a : a + 1 + i % 10].tolist()}
            )
            responses.append((a, r))
            i += 1

    async def answered(n: int) -> None:
        """Until ``n`` more requests are answered (a generous deadline, for a loaded machine)."""
        target = len(responses) + n
        deadline = time.monotonic() + 30.0
        while len(responses) < target:
            assert time.monotonic() < deadline, f"{len(responses)} answered, waiting for {target}"
            await asyncio.sleep(0.001)

    async with make_client(models_dir=repo, admin_token="reload-token", max_batch_rows=8) as client:
        workers = [asyncio.ensure_future(client_loop(client, w)) for w in range(16)]
        await answered(100)  # by version 1
        publish_as(repo, "xgb_small", "logreg", 2)
        first = await client.post("/admin/reload", headers=TOKEN)
        await answered(100)  # by version 2, with version 1 still loaded
        shutil.rmtree(repo / "logreg" / "1")
        second = await client.post("/admin/reload", headers=TOKEN)
        await answered(100)  # by version 2 alone
        stop.set()
        await asyncio.gather(*workers)
        old = await client.post(
            "/v1/models/logreg/versions/1/predict", json={"instances": rows[:1].tolist()}
        )
    assert first.json()["loaded"] == ["logreg/2"]
    assert second.json()["unloaded"] == ["logreg/1"]
    assert old.status_code == 404
    seen = {1: 0, 2: 0}
    for a, r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        version = body["version"]
        seen[version] += 1
        got = np.array([p["scores"] for p in body["predictions"]], dtype=np.float32)
        np.testing.assert_allclose(got, expected[version][a : a + len(got)], rtol=0, atol=1e-6)
    assert seen[1] > 0 and seen[2] > 0


async def test_periodic_scan_picks_up_a_new_version(
    make_client: MakeClient, repo: Path, holdout: np.ndarray
) -> None:
    async with make_client(models_dir=repo, reload_interval_s=0.05) as client:
        publish_as(repo, "logreg", "logreg", 2)
        for _ in range(200):
            if core_of(client).registry.get("logreg").version == 2:
                break
            await asyncio.sleep(0.02)
        r = await client.post("/v1/models/logreg/predict", json={"instances": holdout[:1].tolist()})
        listed = (await client.get("/v1/models")).json()
    assert r.json()["version"] == 2
    assert {m["name"]: m["versions"] for m in listed}["logreg"] == [1, 2]


async def test_a_broken_update_keeps_the_working_version(
    make_client: MakeClient, repo: Path, holdout: np.ndarray
) -> None:
    async with make_client(models_dir=repo, admin_token="reload-token") as client:
        bad = publish_as(repo, "logreg", "logreg", 2)
        (bad / "model.onnx").write_bytes(b"not an onnx file")
        report = (await client.post("/admin/reload", headers=TOKEN)).json()
        r = await client.post("/v1/models/logreg/predict", json={"instances": holdout[:1].tolist()})
    assert "logreg/2" in report["refused"]
    assert r.status_code == 200 and r.json()["version"] == 1
