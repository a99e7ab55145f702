"""The HTTP API in-process: /v1, /v2 (Open Inference Protocol), health, metrics, admin, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server.conftest import MakeClient, core_of, feature_names
from tests.support.model_repo import ALL_TEST_MODELS


def scores_of(body: dict[str, Any]) -> np.ndarray:
    return np.array([p["scores"] for p in body["predictions"]], dtype=np.float32)


async def test_v1_predict_list_rows_matches_onnx_runtime(
    make_client: MakeClient, holdout: np.ndarray, reference: Any
) -> None:
    rows = holdout[:5]
    async with make_client() as client:
        r = await client.post("/v1/models/xgb_small/predict", json={"instances": rows.tolist()})
    assert r.status_code == 200
    body = r.json()
    assert (body["model"], body["version"], body["classes"]) == ("xgb_small", 1, [0, 1])
    assert body["request_id"] == r.headers["x-request-id"]
    np.testing.assert_array_equal(scores_of(body), reference("xgb_small").scores(rows))


async def test_v1_predict_named_features_equals_list_form(
    make_client: MakeClient, holdout: np.ndarray, model_repo: Path
) -> None:
    names = feature_names(model_repo)
    rows = holdout[:3]
    named = [dict(zip(names, row.tolist(), strict=True)) for row in rows]
    async with make_client() as client:
        by_list = await client.post("/v1/models/logreg/predict", json={"instances": rows.tolist()})
        by_name = await client.post(
            "/v1/models/logreg/versions/1/predict", json={"instances": named[::-1][::-1]}
        )
    assert by_list.status_code == by_name.status_code == 200
    assert by_list.json()["predictions"] == by_name.json()["predictions"]


async def test_labels_follow_the_cards_threshold(
    make_client: MakeClient, holdout: np.ndarray
) -> None:
    async with make_client() as client:
        card = core_of(client).registry.get("xgb_small").card
        r = await client.post("/v1/models/xgb_small/predict", json={"instances": holdout.tolist()})
    preds = r.json()["predictions"]
    for p in preds:
        assert p["label"] == (1 if p["scores"][1] >= card.threshold else 0)
    assert {p["label"] for p in preds} == {0, 1}  # the hold-out has both outcomes


async def test_request_id_is_echoed_or_generated(
    make_client: MakeClient, holdout: np.ndarray
) -> None:
    body = {"instances": holdout[:1].tolist()}
    async with make_client() as client:
        given = await client.post(
            "/v1/models/logreg/predict", json=body, headers={"X-Request-ID": "abc-123"}
        )
        generated = [await client.post("/v1/models/logreg/predict", json=body) for _ in range(2)]
        failed = await client.post(
            "/v1/models/logreg/predict", json={"instances": []}, headers={"X-Request-ID": "e-1"}
        )
    assert given.headers["x-request-id"] == given.json()["request_id"] == "abc-123"
    ids = {r.headers["x-request-id"] for r in generated}
    assert len(ids) == 2 and "abc-123" not in ids
    assert failed.headers["x-request-id"] == failed.json()["request_id"] == "e-1"


@pytest.mark.parametrize("bad_id", ["a b", "x" * 129])
async def test_request_id_rule_is_the_same_for_answers_and_framework_errors(
    make_client: MakeClient, holdout: np.ndarray, bad_id: str
) -> None:
    body = {"instances": holdout[:1].tolist()}
    async with make_client() as client:
        answered = await client.post(
            "/v1/models/logreg/predict", json=body, headers={"X-Request-ID": bad_id}
        )
        no_route = await client.get("/no/such/route", headers={"X-Request-ID": bad_id})
        echoed = await client.get("/no/such/route", headers={"X-Request-ID": "ok-1"})
    assert answered.status_code == 200 and no_route.status_code == 404
    for r in (answered, no_route):
        assert r.headers["x-request-id"] == r.json()["request_id"] != bad_id
    assert echoed.headers["x-request-id"] == echoed.json()["request_id"] == "ok-1"


async def test_list_and_describe_models(make_client: MakeClient) -> None:
    async with make_client() as client:
        listed = (await client.get("/v1/models")).json()
        detail = (await client.get("/v1/models/xgb_small")).json()
    assert {m["name"]: m["versions"] for m in listed} == {name: [1] for name in ALL_TEST_MODELS}
    assert detail["latest"] == 1 and detail["versions"] == [1]
    assert detail["schema"]["n_features"] == len(detail["schema"]["feature_names"]) == 24
    assert 0.0 <= detail["threshold"] <= 1.0
    assert {"precision", "recall", "pr_auc", "roc_auc"} <= set(detail["metrics"])
    assert detail["cost"]["mode"] in {"inline", "thread"}
    assert detail["cost"]["measured_us_batch1"] > 0
    assert detail["cost"]["export"]["us_batch1"] > 0


async def test_v2_health_metadata_and_ready(make_client: MakeClient) -> None:
    async with make_client() as client:
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        meta = await client.get("/v2/models/logreg")
        meta_v = await client.get("/v2/models/logreg/versions/1")
        model_ready = await client.get("/v2/models/logreg/ready")
        version_ready = await client.get("/v2/models/logreg/versions/1/ready")
        missing = await client.get("/v2/models/nope/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert (
        meta.json()
        == meta_v.json()
        == {
            "name": "logreg",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 24]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
        }
    )
    assert model_ready.json() == version_ready.json() == {"name": "logreg", "ready": True}
    assert missing.status_code == 404
    assert missing.json()["error"] == missing.json()["detail"]  # the member V2 clients read


@pytest.mark.parametrize("nested", [False, True])
async def test_v2_infer_flat_or_nested(
    make_client: MakeClient, holdout: np.ndarray, reference: Any, nested: bool
) -> None:
    rows = holdout[:4]
    data = rows.tolist() if nested else rows.ravel().tolist()
    req = {
        "id": "req-7",
        "inputs": [{"name": "input", "shape": [4, 24], "datatype": "FP32", "data": data}],
    }
    async with make_client() as client:
        r = await client.post("/v2/models/xgb_small/versions/1/infer", json=req)
        only_labels = await client.post(
            "/v2/models/xgb_small/infer", json={**req, "outputs": [{"name": "label"}]}
        )
    assert r.status_code == 200
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("xgb_small", "1", "req-7")
    probs, labels = body["outputs"]
    assert (probs["name"], probs["datatype"], probs["shape"]) == ("probabilities", "FP32", [4, 2])
    assert (labels["name"], labels["datatype"], labels["shape"]) == ("label", "INT64", [4])
    expected = reference("xgb_small").scores(rows)
    np.testing.assert_array_equal(np.array(probs["data"], dtype=np.float32).reshape(4, 2), expected)
    assert [o["name"] for o in only_labels.json()["outputs"]] == ["label"]
    assert only_labels.json()["outputs"][0]["data"] == labels["data"]


async def test_health_and_metrics(make_client: MakeClient, holdout: np.ndarray) -> None:
    async with make_client() as client:
        await client.post("/v1/models/logreg/predict", json={"instances": holdout[:2].tolist()})
        await client.post("/v1/models/logreg/predict", json={"instances": []})
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        metrics = await client.get("/metrics")
    assert live.status_code == ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": len(ALL_TEST_MODELS)}
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for line in (
        'tabserve_request_duration_seconds_count{model="logreg",status="200"} 1.0',
        'tabserve_request_duration_seconds_count{model="logreg",status="400"} 1.0',
        'tabserve_requests_total{model="logreg",version="1"} 2.0',
        'tabserve_batch_rows_sum{model="logreg",version="1"} 2.0',
        f"tabserve_model_versions_loaded {len(ALL_TEST_MODELS)}.0",
    ):
        assert line in text


async def test_each_app_has_its_own_metrics_registry(
    make_client: MakeClient, holdout: np.ndarray
) -> None:
    async with make_client() as first, make_client() as second:
        await first.post("/v1/models/logreg/predict", json={"instances": holdout[:1].tolist()})
        assert core_of(first).metrics.registry is not core_of(second).metrics.registry
        text = (await second.get("/metrics")).text
    assert 'tabserve_requests_total{model="logreg"' not in text


async def test_admin_disabled_without_token(make_client: MakeClient) -> None:
    async with make_client() as client:
        r = await client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 404
    assert r.json()["type"] == "urn:tabserve:problem:admin-disabled"


async def test_admin_needs_the_right_bearer_token(make_client: MakeClient) -> None:
    async with make_client(admin_token="s3cret-token") as client:
        none = await client.post("/admin/reload")
        wrong = await client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        basic = await client.post("/admin/reload", headers={"Authorization": "Basic s3cret-token"})
        ok = await client.post("/admin/reload", headers={"Authorization": "Bearer s3cret-token"})
    for r in (none, wrong, basic):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "s3cret" not in r.text
    assert ok.status_code == 200
    assert ok.json()["serving"] == sorted(f"{name}/1" for name in ALL_TEST_MODELS)


async def test_openapi_schema_documents_the_api(make_client: MakeClient) -> None:
    async with make_client() as client:
        schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{version}/predict",
        "/v1/models",
        "/v1/models/{name}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/health/ready",
        "/health/ready",
        "/metrics",
        "/admin/reload",
    ):
        assert path in paths
    predict = paths["/v1/models/{name}/predict"]["post"]
    body_schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["instances"]
    assert "/bench/floor/{name}" not in paths


async def test_floor_route_only_when_enabled(make_client: MakeClient) -> None:
    async with make_client() as client:
        off = await client.post("/bench/floor/x", content=b"{}")
    async with make_client(bench_floor_route=True) as client:
        on = await client.post("/bench/floor/x", content=b"{}")
    assert off.status_code == 404
    assert on.status_code == 200
