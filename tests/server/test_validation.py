"""Every bad input gets a 4xx with one problem+json body; never a 500, never a hang."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import MakeClient, feature_names

ROW = [0.5] * 24


def named_row(model_repo: Path) -> dict[str, float]:
    return dict.fromkeys(feature_names(model_repo), 0.5)


def case(body: object) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


BAD_BODIES: dict[str, tuple[str, bytes, int, str]] = {
    # id: (path, body, status, problem slug)
    "malformed-json": ("/v1/models/logreg/predict", b'{"instances": [[1, 2', 400, "invalid-input"),
    "not-an-object": ("/v1/models/logreg/predict", case([[1.0] * 24]), 400, "invalid-input"),
    "no-instances": ("/v1/models/logreg/predict", case({"rows": [ROW]}), 400, "invalid-input"),
    "empty-instances": ("/v1/models/logreg/predict", case({"instances": []}), 400, "invalid-input"),
    "too-few-features": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW[:-1]]}),
        400,
        "invalid-input",
    ),
    "too-many-features": (
        "/v1/models/logreg/predict",
        case({"instances": [[*ROW, 1.0]]}),
        400,
        "invalid-input",
    ),
    "ragged-rows": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW, ROW[:3]]}),
        400,
        "invalid-input",
    ),
    "non-numeric": (
        "/v1/models/logreg/predict",
        case({"instances": [["x", *ROW[1:]]]}),
        400,
        "invalid-input",
    ),
    "boolean": (
        "/v1/models/logreg/predict",
        case({"instances": [[True, *ROW[1:]]]}),
        400,
        "invalid-input",
    ),
    "null-for-a-model-without-missing": (
        "/v1/models/logreg/predict",
        case({"instances": [[None, *ROW[1:]]]}),
        400,
        "invalid-input",
    ),
    "nan-literal": (
        "/v1/models/logreg/predict",
        b'{"instances": [[NaN' + b", 0.5" * 23 + b"]]}",
        400,
        "invalid-input",
    ),
    "overflows-float32": (
        "/v1/models/xgb_small/predict",
        case({"instances": [[1e39, *ROW[1:]]]}),
        400,
        "invalid-input",
    ),
    "overflows-float64": (
        "/v1/models/xgb_small/predict",
        b'{"instances": [[1e400' + b", 0.5" * 23 + b"]]}",
        400,
        "invalid-input",
    ),
    "too-many-rows": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW] * 11}),
        413,
        "payload-too-large",
    ),
    "unknown-model": (
        "/v1/models/nope/predict",
        case({"instances": [ROW]}),
        404,
        "model-not-found",
    ),
    "unknown-version": (
        "/v1/models/logreg/versions/9/predict",
        case({"instances": [ROW]}),
        404,
        "version-not-found",
    ),
    "version-not-an-integer": (
        "/v1/models/logreg/versions/abc/predict",
        case({"instances": [ROW]}),
        404,
        "not-found",
    ),
    "bad-deadline-header": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW]}),
        400,
        "invalid-input",
    ),
    "v2-two-inputs": (
        "/v2/models/logreg/infer",
        case({"inputs": [{"name": "a", "shape": [1, 24], "datatype": "FP32", "data": ROW}] * 2}),
        400,
        "invalid-input",
    ),
    "v2-shape-mismatch": (
        "/v2/models/logreg/infer",
        case({"inputs": [{"name": "input", "shape": [2, 24], "datatype": "FP32", "data": ROW}]}),
        400,
        "invalid-input",
    ),
    "v2-wrong-datatype": (
        "/v2/models/logreg/infer",
        case({"inputs": [{"name": "input", "shape": [1, 24], "datatype": "BYTES", "data": ROW}]}),
        400,
        "invalid-input",
    ),
    "v2-unknown-output": (
        "/v2/models/logreg/infer",
        case(
            {
                "inputs": [{"name": "input", "shape": [1, 24], "datatype": "FP32", "data": ROW}],
                "outputs": [{"name": "embedding"}],
            }
        ),
        400,
        "invalid-input",
    ),
}


@pytest.mark.parametrize("case_id", sorted(BAD_BODIES))
async def test_bad_input_gets_a_problem(make_client: MakeClient, case_id: str) -> None:
    path, body, status, slug = BAD_BODIES[case_id]
    headers = {"content-type": "application/json"}
    if case_id == "bad-deadline-header":
        headers["X-Deadline-Ms"] = "soon"
    async with make_client(max_request_rows=10) as client:
        r = await client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == f"urn:tabserve:problem:{slug}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == r.headers["x-request-id"]
    if path.startswith("/v2/"):
        assert problem["error"] == problem["detail"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda row: {**row, "surprise": 1.0}, "unknown features ['surprise']"),
        (
            lambda row: {k: v for k, v in row.items() if k != "amount"},
            "missing features ['amount']",
        ),
    ],
    ids=["unknown-name", "missing-name"],
)
async def test_named_features_must_match_the_schema(
    make_client: MakeClient, model_repo: Path, mutate: object, expected: str
) -> None:
    row = mutate(named_row(model_repo))  # type: ignore[operator]
    async with make_client() as client:
        r = await client.post("/v1/models/logreg/predict", json={"instances": [row]})
    assert r.status_code == 400
    assert expected in r.json()["detail"]


async def test_mixed_row_forms_are_refused(make_client: MakeClient, model_repo: Path) -> None:
    async with make_client() as client:
        r = await client.post(
            "/v1/models/logreg/predict", json={"instances": [ROW, named_row(model_repo)]}
        )
    assert r.status_code == 400


async def test_null_is_a_missing_value_for_models_that_allow_it(make_client: MakeClient) -> None:
    async with make_client() as client:
        r = await client.post(
            "/v1/models/xgb_small/predict", json={"instances": [[None, *ROW[1:]]]}
        )
    assert r.status_code == 200
    assert np.isfinite(r.json()["predictions"][0]["scores"]).all()


async def test_body_over_the_limit_gets_413(make_client: MakeClient) -> None:
    body = case({"instances": [ROW] * 200})
    async with make_client(max_body_bytes=1024) as client:
        r = await client.post(
            "/v1/models/logreg/predict", content=body, headers={"content-type": "application/json"}
        )
    assert r.status_code == 413
    assert r.json()["type"] == "urn:tabserve:problem:payload-too-large"


async def test_wrong_method_gets_a_problem(make_client: MakeClient) -> None:
    async with make_client() as client:
        r = await client.get("/v1/models/logreg/predict")
    assert r.status_code == 405
    assert r.json()["type"] == "urn:tabserve:problem:method-not-allowed"
