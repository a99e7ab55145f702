"""Monitoring of typed models through the real app: string rows in, drift and live quality out.

The models are real scikit-learn pipelines (OneHotEncoder on a string column, StandardScaler on a
number) converted per column with skl2onnx (``tests/monitoring/typed_model.py``), served by
ONNX Runtime; rows are posted to ``/v1`` as objects with strings, labels to ``.../feedback``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from server.app import create_app
from server.monitoring.extension import MonitoringExtension
from server.settings import Settings
from tests.monitoring.typed_model import SEGMENTS, build_typed_repo, raw_rows

CHUNK = 100


@pytest.fixture(scope="module")
def typed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_typed_repo(tmp_path_factory.mktemp("typed") / "models")


@pytest.fixture
async def client(typed_repo: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = Settings(models_dir=typed_repo, cache=False)
    app = create_app(settings, extensions=[MonitoringExtension(settings)])
    async with AsyncTestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


async def predict(
    client: AsyncTestClient[Litestar], model: str, frame: pd.DataFrame, prefix: str
) -> list[dict[str, Any]]:
    """Post ``frame`` as object rows in chunks (request ids ``{prefix}-{chunk start}``)."""
    answers: list[dict[str, Any]] = []
    records = frame.to_dict(orient="records")
    for start in range(0, len(records), CHUNK):
        r = await client.post(
            f"/v1/models/{model}/predict",
            json={"instances": records[start : start + CHUNK]},
            headers={"x-request-id": f"{prefix}-{start}"},
        )
        assert r.status_code == 200, r.text
        answers.extend(r.json()["predictions"])
    return answers


async def snapshot(client: AsyncTestClient[Litestar], model: str) -> dict[str, Any]:
    r = await client.get(f"/v1/models/{model}/monitoring")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_multiclass_string_rows_drift_and_feedback(
    client: AsyncTestClient[Litestar],
) -> None:
    # Region shares reversed from training, and one row in ten from a region never seen.
    frame = raw_rows(800, seed=5, shares=[0.1, 0.3, 0.2, 0.4])
    unseen = np.random.default_rng(5).random(800) < 0.1
    frame.loc[unseen, "region"] = "mars"
    answers = await predict(client, "shop-segment", frame, "seg")
    assert {a["label"] for a in answers} <= set(SEGMENTS)

    snap = await snapshot(client, "shop-segment")
    assert (snap["task"], snap["window"]["rows"], snap["status"]) == ("multiclass", 800, "drift")
    region = next(f for f in snap["features"] if f["name"] == "region")
    assert region["status"] == "drift"
    assert region["unseen_rate"] == pytest.approx(unseen.mean())
    assert region["largest_shifts"][0]["category"] in {"north", "west"}
    amount = next(f for f in snap["features"] if f["name"] == "amount")
    assert amount["status"] == "ok"
    scores = snap["scores"]
    assert scores["of"] == "predicted_class" and scores["classes"] == SEGMENTS
    predicted = [a["label"] for a in answers]
    assert scores["predicted_shares"] == pytest.approx([predicted.count(c) / 800 for c in SEGMENTS])

    # Labels as the user's own values; the first three say the model was right, one wrong.
    truths = [answers[0]["label"], answers[1]["label"], answers[2]["label"]]
    truths.append(next(c for c in SEGMENTS if c != answers[3]["label"]))
    for row, truth in enumerate(truths):
        r = await client.post(
            "/v1/models/shop-segment/feedback",
            json={"request_id": "seg-0", "row": row, "label": truth},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["label"], body["predicted"]) == (truth, answers[row]["label"])
        assert "score" not in body and "predicted_positive" not in body
    quality = (await snapshot(client, "shop-segment"))["quality"]
    assert quality["labels"] == 4 and quality["accuracy"] == 0.75
    assert quality["macro_f1"] is not None and "reference" in quality

    r = await client.post(
        "/v1/models/shop-segment/feedback", json={"request_id": "seg-0", "label": "vip"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "urn:tabserve:problem:invalid-input"
    assert "'vip' is not one of the classes" in r.json()["detail"]


async def test_regression_calm_traffic_feedback_and_metrics(
    client: AsyncTestClient[Litestar],
) -> None:
    frame = raw_rows(600, seed=6)  # as in training
    answers = await predict(client, "shop-price", frame, "price")
    values = np.array([a["value"] for a in answers])

    snap = await snapshot(client, "shop-price")
    assert (snap["task"], snap["status"]) == ("regression", "ok")
    assert all(f["status"] == "ok" for f in snap["features"]), snap["features"]
    assert snap["scores"]["of"] == "predicted_value"
    assert snap["scores"]["psi"] < 0.1

    targets = values[:5] + np.array([2.0, -2.0, 4.0, -4.0, 0.0])
    for row, target in enumerate(targets):
        r = await client.post(
            "/v1/models/shop-price/feedback",
            json={"request_id": "price-0", "row": row, "label": float(target)},
        )
        assert r.status_code == 200, r.text
        assert r.json()["predicted"] == pytest.approx(values[row], rel=1e-6)
    quality = (await snapshot(client, "shop-price"))["quality"]
    assert quality["labels"] == 5
    assert quality["mae"] == pytest.approx(2.4, abs=1e-4)
    assert quality["rmse"] == pytest.approx(np.sqrt(8.0), abs=1e-4)
    assert set(quality["reference"]) == {"mae", "rmse"}

    r = await client.post(
        "/v1/models/shop-price/feedback", json={"request_id": "price-0", "label": "cheap"}
    )
    assert r.status_code == 400, r.text
    assert "'cheap' is not a number" in r.json()["detail"]

    text = (await client.get("/metrics")).text
    assert 'tabserve_live_quality{metric="mae",model="shop-price",version="1"}' in text
    assert 'tabserve_drift_feature_unseen_rate{feature="region",model="shop-price"' in text
    assert 'tabserve_drift_score_psi{model="shop-price",version="1"}' in text
