"""Triton's own clients, with their defaults, against a real ``tabserve serve`` process.

``tritonclient.grpc`` talks to ``TABSERVE_GRPC_PORT``; ``tritonclient.http`` to the HTTP port
(binary tensors on, as the client sends by default). Answers must equal ``/v1``'s on the same rows.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.oip.conftest import Running
from tests.support.ports import free_port
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

MODELS = ("logreg", "xgb_small")


@pytest.fixture(scope="module")
def rows(model_repo: Path) -> np.ndarray:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        out: np.ndarray = data["X"][:7].astype(np.float32)
    return out


def v1_answer(url: str, model: str, rows: np.ndarray) -> tuple[np.ndarray, list[int]]:
    body = httpx.post(f"{url}/v1/models/{model}/predict", json={"instances": rows.tolist()}).json()
    scores = np.array([p["scores"] for p in body["predictions"]], dtype=np.float32)
    return scores, [p["label"] for p in body["predictions"]]


# --- tritonclient.grpc ---------------------------------------------------------------------------


def test_grpc_health_and_metadata(running: Running) -> None:
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "tabserve" and "binary_tensor_data" in meta["extensions"]
        for model in MODELS:
            assert client.is_model_ready(model) and client.is_model_ready(model, "1")
            model_meta = client.get_model_metadata(model, as_json=True)
            assert model_meta["inputs"] == [
                {"name": "input", "datatype": "FP32", "shape": ["-1", "24"]}
            ]
            assert [o["name"] for o in model_meta["outputs"]] == ["probabilities", "label"]
        assert not client.is_model_ready("nope")
    finally:
        client.close()


@pytest.mark.parametrize("model", MODELS)
def test_grpc_infer_with_defaults_equals_v1(running: Running, rows: np.ndarray, model: str) -> None:
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        tensor = triton_grpc.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(model, [tensor], request_id="t-1")
    finally:
        client.close()
    scores, labels = v1_answer(running.server.url, model, rows)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), scores)
    label = result.as_numpy("label")
    assert label is not None and label.tolist() == labels
    response = result.get_response(as_json=True)
    assert (response["model_name"], response["model_version"], response["id"]) == (
        model,
        "1",
        "t-1",
    )


def test_grpc_errors_are_statuses_naming_the_problem(running: Running, rows: np.ndarray) -> None:
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        wrong = triton_grpc.InferInput("x", list(rows.shape), "FP32")
        wrong.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as info:
            client.infer("logreg", [wrong])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "has no input 'x'; its input is 'input'" in str(info.value.message())

        right = triton_grpc.InferInput("input", list(rows.shape), "FP32")
        right.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as info:
            client.infer("nope", [right])
        assert info.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as info:
            client.infer("logreg", [right], outputs=[triton_grpc.InferRequestedOutput("score")])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "has no output 'score'" in str(info.value.message())
    finally:
        client.close()


def test_shutdown_drains_grpc_calls(model_repo: Path, rows: np.ndarray, tmp_path: Path) -> None:
    """SIGTERM while calls run: each one is answered (OK) or refused as UNAVAILABLE (draining,
    or the port closed), never another error or a hang; the process ends its shutdown (uvicorn
    then re-raises SIGTERM, so the exit status is -SIGTERM). A call that reached grpcio but no
    handler yet when the port closes is CANCELLED by grpcio itself (it never ran)."""
    grpc_port = free_port()
    server = ServerProcess(
        model_repo,
        env={"TABSERVE_GRPC_PORT": str(grpc_port), "TABSERVE_DRAIN_TIMEOUT_S": "2"},
        log_path=tmp_path / "serve.log",
    )
    server.start()
    outcomes: list[str] = []
    stop = threading.Event()

    def call_until_stopped() -> None:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = triton_grpc.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        try:
            while not stop.is_set():
                try:
                    client.infer("xgb_small", [tensor], client_timeout=10)
                    outcomes.append("OK")
                except InferenceServerException as exc:
                    outcomes.append(str(exc.status()))
                    if exc.status() in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"):
                        return
        finally:
            client.close()

    threads = [threading.Thread(target=call_until_stopped) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        while len(outcomes) < 20:
            stop.wait(0.01)
        code = server.stop()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    assert code == -signal.SIGTERM
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
    assert not any(t.is_alive() for t in threads)
    assert set(outcomes) <= {"OK", "StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}
    assert outcomes.count("OK") >= 20


# --- tritonclient.http ---------------------------------------------------------------------------


def http_client(running: Running) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(running.server.url.removeprefix("http://"))


def test_http_health_and_metadata(running: Running) -> None:
    client = http_client(running)
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata()
        assert meta["name"] == "tabserve" and "binary_tensor_data" in meta["extensions"]
        for model in MODELS:
            assert client.is_model_ready(model) and client.is_model_ready(model, "1")
            model_meta = client.get_model_metadata(model)
            assert model_meta["inputs"] == [
                {"name": "input", "datatype": "FP32", "shape": [-1, 24]}
            ]
            assert [o["name"] for o in model_meta["outputs"]] == ["probabilities", "label"]
        assert not client.is_model_ready("nope")
    finally:
        client.close()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_equals_v1(running: Running, rows: np.ndarray, model: str, binary: bool) -> None:
    """binary: tritonclient's defaults (the input as binary data, every output asked for in
    binary); json: everything as JSON (``binary_data=False``)."""
    client = http_client(running)
    try:
        tensor = triton_http.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = (
            None
            if binary
            else [
                triton_http.InferRequestedOutput(name, binary_data=False)
                for name in ("probabilities", "label")
            ]
        )
        result = client.infer(model, [tensor], outputs=outputs, request_id="h-1")
    finally:
        client.close()
    scores, labels = v1_answer(running.server.url, model, rows)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), scores)
    label = result.as_numpy("label")
    assert label is not None and label.tolist() == labels
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        model,
        "1",
        "h-1",
    )
    sizes = [o.get("parameters", {}).get("binary_data_size") for o in response["outputs"]]
    assert sizes == ([7 * 2 * 4, 7 * 8] if binary else [None, None])


def test_http_errors_name_the_problem(running: Running, rows: np.ndarray) -> None:
    client = http_client(running)
    try:
        wrong = triton_http.InferInput("x", list(rows.shape), "FP32")
        wrong.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as info:
            client.infer("logreg", [wrong])
        assert info.value.status() == "400"
        assert "has no input 'x'; its input is 'input'" in str(info.value.message())
        as_fp64 = triton_http.InferInput("input", list(rows.shape), "FP64")
        as_fp64.set_data_from_numpy(rows.astype(np.float64))
        with pytest.raises(InferenceServerException) as info:
            client.infer("logreg", [as_fp64])
        assert "is FP32 (see the model's metadata), got 'FP64'" in str(info.value.message())
        right = triton_http.InferInput("input", list(rows.shape), "FP32")
        right.set_data_from_numpy(rows)
        with pytest.raises(InferenceServerException) as info:
            client.infer("logreg", [right], outputs=[triton_http.InferRequestedOutput("score")])
        assert "has no output 'score'" in str(info.value.message())
    finally:
        client.close()


def test_binary_body_is_checked_over_raw_http(running: Running, rows: np.ndarray) -> None:
    body, json_size = triton_http.InferenceServerClient.generate_request_body([binary_input(rows)])
    url = f"{running.server.url}/v2/models/logreg/infer"
    ok = httpx.post(url, content=body, headers={"Inference-Header-Content-Length": str(json_size)})
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/octet-stream"
    assert int(ok.headers["inference-header-content-length"]) < len(ok.content)
    octet = {"Content-Type": "application/octet-stream"}
    for length, detail in [
        ("abc", "Inference-Header-Content-Length must be the length in bytes"),
        (str(len(body) + 1), "but the body has"),
        (str(json_size - 1), "are not a JSON infer request"),
    ]:
        bad = httpx.post(
            url, content=body, headers={**octet, "Inference-Header-Content-Length": length}
        )
        assert bad.status_code == 400, bad.text
        assert detail in bad.json()["detail"]
    v1 = httpx.post(
        f"{running.server.url}/v1/models/logreg/predict",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert v1.status_code == 400 and "/v2" in v1.json()["detail"]


def binary_input(rows: np.ndarray) -> triton_http.InferInput:
    tensor = triton_http.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor
