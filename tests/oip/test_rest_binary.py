"""``/v2`` infer with binary tensor data and strict inputs, in process, on both request paths
(the fast dispatch and Litestar's handlers answer alike)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from server.app import create_app
from server.settings import Settings

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(params=[True, False], ids=["fast-dispatch", "litestar"])
def client(request: pytest.FixtureRequest, model_repo: Path) -> Client:
    @asynccontextmanager
    async def _client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(models_dir=model_repo, fast_dispatch=request.param, **overrides)
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.lifespan(),
            httpx.AsyncClient(transport=transport, base_url="http://tabserve.test") as http,
        ):
            yield http

    return _client


@pytest.fixture(scope="module")
def rows(model_repo: Path) -> np.ndarray:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        out: np.ndarray = data["X"][:3].astype(np.float32)
    return out


def binary_body(
    rows: np.ndarray, name: str = "input", outputs: list[Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    tensor = triton_http.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor], outputs)
    return body, {"Inference-Header-Content-Length": str(json_size)}


async def test_binary_in_binary_out_equals_v1(client: Client, rows: np.ndarray) -> None:
    body, headers = binary_body(rows)
    async with client() as http:
        r = await http.post("/v2/models/logreg/infer", content=body, headers=headers)
        v1 = (
            await http.post("/v1/models/logreg/predict", json={"instances": rows.tolist()})
        ).json()
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-request-id"]
    length = int(r.headers["inference-header-content-length"])
    result = triton_http.InferenceServerClient.parse_response_body(r.content, header_length=length)
    np.testing.assert_array_equal(
        result.as_numpy("probabilities"), [p["scores"] for p in v1["predictions"]]
    )
    label = result.as_numpy("label")
    assert label is not None and label.tolist() == [p["label"] for p in v1["predictions"]]


async def test_json_request_may_ask_for_binary_outputs(client: Client, rows: np.ndarray) -> None:
    tensor = {"name": "input", "shape": [3, 24], "datatype": "FP32", "data": rows.ravel().tolist()}
    body = {"inputs": [tensor], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    async with client() as http:
        r = await http.post("/v2/models/logreg/infer", json=body)
        plain = await http.post("/v2/models/logreg/infer", json={"inputs": [tensor]})
    assert r.status_code == 200 and plain.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    result = triton_http.InferenceServerClient.parse_response_body(r.content, header_length=length)
    label = result.as_numpy("label")
    assert label is not None and label.tolist() == plain.json()["outputs"][1]["data"]
    assert plain.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in plain.headers


@pytest.mark.parametrize(
    ("tensors", "detail"),
    [
        (
            [("x", "FP32", [1, 24])],
            "model logreg has no input 'x'; its input is 'input' (FP32 [-1, 24])",
        ),
        ([], "input 'input' (FP32 [-1, 24]) is missing"),
        (
            [("input", "FP64", [1, 24])],
            "input 'input' is FP32 (see the model's metadata), got 'FP64'",
        ),
        (
            [("input", "FP32", [1, 23])],
            "input 'input' has shape [rows, 24] (see the model's metadata), got [1, 23]",
        ),
        (
            [("input", "FP32", [1, 24]), ("extra", "FP32", [1, 24])],
            "model logreg has no input 'extra'; its input is 'input' (FP32 [-1, 24])",
        ),
    ],
)
async def test_json_inputs_are_held_to_the_metadata(
    client: Client, tensors: list[tuple[str, str, list[int]]], detail: str
) -> None:
    inputs = [
        {"name": n, "datatype": d, "shape": s, "data": [0.5] * (s[0] * s[1])} for n, d, s in tensors
    ]
    async with client() as http:
        r = await http.post("/v2/models/logreg/infer", json={"inputs": inputs})
    assert r.status_code == 400
    assert r.json()["detail"] == detail


async def test_unknown_output_is_400(client: Client, rows: np.ndarray) -> None:
    tensor = {"name": "input", "shape": [1, 24], "datatype": "FP32", "data": rows[0].tolist()}
    async with client() as http:
        r = await http.post(
            "/v2/models/logreg/infer", json={"inputs": [tensor], "outputs": [{"name": "score"}]}
        )
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "model logreg has no output 'score'; its outputs are ['probabilities', 'label']"
    )


async def test_binary_errors_and_media_types(client: Client, rows: np.ndarray) -> None:
    body, headers = binary_body(rows)
    async with client() as http:
        octet = {**headers, "Content-Type": "application/octet-stream"}
        assert (
            await http.post("/v2/models/logreg/infer", content=body, headers=octet)
        ).status_code == 200
        text = {**headers, "Content-Type": "text/plain"}
        r = await http.post("/v2/models/logreg/infer", content=body, headers=text)
        assert r.status_code == 415
        r = await http.post("/v1/models/logreg/predict", content=body, headers=headers)
        assert r.status_code == 400 and "/v2 infer only" in r.json()["detail"]
        wrong = binary_body(rows, name="x")
        r = await http.post("/v2/models/logreg/infer", content=wrong[0], headers=wrong[1])
        assert r.status_code == 400 and "has no input 'x'" in r.json()["detail"]
        short = {"Inference-Header-Content-Length": str(len(body) + 5)}
        r = await http.post("/v2/models/logreg/infer", content=body, headers=short)
        assert r.status_code == 400 and "but the body has" in r.json()["detail"]


async def test_server_metadata_states_the_extension(client: Client) -> None:
    async with client() as http:
        r = await http.get("/v2")
    assert r.status_code == 200
    assert r.json()["name"] == "tabserve"
    assert r.json()["extensions"] == ["binary_tensor_data"]
