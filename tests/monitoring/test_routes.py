"""Monitoring over HTTP: an app on the session's model repository with MonitoringExtension."""

from __future__ import annotations

import gc
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.app import create_app
from server.modelcard import encode_card, load_card
from server.monitoring import row_hash
from server.monitoring.extension import MonitoringExtension
from server.settings import Settings

ADMIN = {"Authorization": "Bearer t"}


@pytest.fixture
async def client(model_repo: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = Settings(models_dir=model_repo)
    app = create_app(settings, extensions=[MonitoringExtension(settings)])
    async with AsyncTestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def holdout(model_repo: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(model_repo / "logreg" / "1" / "holdout.npz") as data:
        return data["X"].astype(np.float32), data["y"]


async def test_monitoring_follows_served_traffic(
    client: AsyncTestClient[Litestar], holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = holdout
    r = await client.get("/v1/models/logreg/monitoring")
    assert r.status_code == 200
    assert r.json()["window"]["rows"] == 0
    r = await client.post("/v1/models/logreg/predict", json={"instances": X[:300].tolist()})
    assert r.status_code == 200
    snap = (await client.get("/v1/models/logreg/versions/1/monitoring")).json()
    assert (snap["model"], snap["version"]) == ("logreg", 1)
    assert snap["window"]["rows"] == 300  # one request, split by the batcher into 64-row batches
    assert snap["status"] == "insufficient_data"  # below drift_min_rows (500)
    assert max(f["psi"] for f in snap["features"]) < 0.1
    other = (await client.get("/v1/models/xgb_small/monitoring")).json()
    assert other["window"]["rows"] == 0


async def test_feedback_by_request_id_and_row_hash(
    client: AsyncTestClient[Litestar], holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = holdout
    r = await client.post(
        "/v1/models/logreg/predict",
        json={"instances": X[:100].tolist()},
        headers={"x-request-id": "batch-7"},
    )
    served = np.array([p["scores"][1] for p in r.json()["predictions"]])
    r = await client.post(
        "/v1/models/logreg/feedback", json={"request_id": "batch-7", "row": 80, "label": int(y[80])}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["matched_by"]) == ("logreg", 1, "request_id")
    assert body["score"] == pytest.approx(served[80], abs=1e-6)
    r = await client.post(
        "/v1/models/logreg/versions/1/feedback",
        json={"row_hash": row_hash(X[5]), "label": int(y[5])},
    )
    assert r.status_code == 200, r.text
    assert r.json()["score"] == pytest.approx(served[5], abs=1e-6)
    quality = (await client.get("/v1/models/logreg/monitoring")).json()["quality"]
    assert quality["labels"] == 2


async def test_feedback_errors_are_problems(
    client: AsyncTestClient[Litestar], holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = holdout
    await client.post(
        "/v1/models/logreg/predict",
        json={"instances": X[:1].tolist()},
        headers={"x-request-id": "a"},
    )
    cases = [
        ({"request_id": "never-seen", "label": 1}, 404, "unknown-feedback-id"),
        ({"request_id": "a", "row": 1, "label": 1}, 404, "unknown-feedback-id"),
        ({"row_hash": "00" * 16, "label": 1}, 404, "unknown-feedback-id"),
        ({"request_id": "a", "label": 7}, 400, "invalid-input"),
        ({"request_id": "a"}, 400, "invalid-input"),
        ({"label": 1}, 400, "invalid-input"),
        ({"request_id": "a", "label": 1, "extra": 1}, 400, "invalid-input"),
    ]
    for body, status, slug in cases:
        r = await client.post("/v1/models/logreg/feedback", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["type"] == f"urn:tabserve:problem:{slug}"
    r = await client.post("/v1/models/nope/feedback", json={"request_id": "a", "label": 1})
    assert r.status_code == 404
    assert (await client.get("/v1/models/logreg/versions/9/monitoring")).status_code == 404


async def test_prometheus_exposes_monitoring(
    client: AsyncTestClient[Litestar], holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = holdout
    await client.post("/v1/models/xgb_small/predict", json={"instances": X[:10].tolist()})
    text = (await client.get("/metrics")).text
    assert 'tabserve_drift_window_rows{model="xgb_small",version="1"} 10.0' in text
    assert 'tabserve_drift_feature_psi{feature="amount",model="logreg",version="1"}' in text
    assert 'tabserve_drift_status{model="logreg",version="1"} -1.0' in text


def served(ext: MonitoringExtension) -> list[tuple[str, int]]:
    """Monitored versions of logreg and xgb_small (the session repository holds other models)."""
    return [
        (m.card.name, m.card.version)
        for m in ext.serving()
        if m.card.name in ("logreg", "xgb_small")
    ]


async def test_feedback_finds_rows_of_an_older_version_after_a_new_one_loads(
    model_repo: Path, tmp_path: Path, holdout: tuple[np.ndarray, np.ndarray]
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    settings = Settings(models_dir=repo, admin_token="t")
    ext = MonitoringExtension(settings)
    app = create_app(settings, extensions=[ext])
    X, _ = holdout
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        await client.post(
            "/v1/models/logreg/predict",
            json={"instances": X[:2].tolist()},
            headers={"x-request-id": "before-v2"},
        )
        # Publish logreg/2 (the same ONNX under a new version) and reload.
        card = msgspec.structs.replace(load_card(repo / "logreg" / "1"), version=2)
        tmp = repo / "logreg" / ".tmp-2"
        tmp.mkdir()
        shutil.copy(repo / "logreg" / "1" / "model.onnx", tmp / "model.onnx")
        (tmp / "model.json").write_bytes(encode_card(card))
        tmp.rename(repo / "logreg" / "2")
        await client.post("/admin/reload", headers=ADMIN)
        assert (await client.get("/v1/models/logreg/monitoring")).json()["version"] == 2
        r = await client.post(
            "/v1/models/logreg/feedback", json={"request_id": "before-v2", "row": 1, "label": 0}
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1
        assert served(ext) == [("logreg", 1), ("logreg", 2), ("xgb_small", 1)]
        # Version 1 leaves: its monitor goes with its batcher.
        shutil.rmtree(repo / "logreg" / "1")
        await client.post("/admin/reload", headers=ADMIN)
        gc.collect()
        assert served(ext) == [("logreg", 2), ("xgb_small", 1)]
        assert (await client.get("/v1/models/logreg/versions/1/monitoring")).status_code == 404


@pytest.mark.parametrize("version", ["+1", "01", "0_1", "%201", "\u0661"])
async def test_monitoring_and_feedback_take_canonical_versions_only(
    client: AsyncTestClient[Litestar], version: str
) -> None:
    r = await client.get(f"/v1/models/logreg/versions/{version}/monitoring")
    assert r.status_code == 404, r.text
    assert r.json()["type"] == "urn:tabserve:problem:version-not-found"
    r = await client.post(
        f"/v1/models/logreg/versions/{version}/feedback", json={"row_hash": "00", "label": 1}
    )
    assert r.status_code == 404, r.text


async def test_feedback_that_is_not_json_gets_415(client: AsyncTestClient[Litestar]) -> None:
    r = await client.post(
        "/v1/models/logreg/feedback",
        content=b'{"row_hash": "00", "label": 1}',
        headers={"content-type": "text/plain"},
    )
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "not JSON" in r.json()["detail"]
