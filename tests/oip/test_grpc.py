"""``inference.GRPCInferenceService`` in the app's own event loop, beside HTTP.

The app runs its lifespan in the test's loop with the gRPC extension on a free port; a grpcio
asyncio client (the protocol's generated stub) and an httpx client over ASGI drive it together,
so the tests see that both front doors share one batcher, queue and metrics per model version.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import numpy as np
import pytest

from server import errors
from server.app import create_app
from server.core import Core
from server.oip import grpc_predict_v2_pb2 as pb
from server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from server.oip.extension import GrpcExtension
from server.oip.grpc_errors import grpc_error
from server.settings import Settings
from tests.support.ports import free_port

Code = grpc.StatusCode


class Served(NamedTuple):
    stub: Any  # pb_grpc.GRPCInferenceServiceStub (untyped, generated)
    http: httpx.AsyncClient
    core: Core
    grpc: GrpcExtension


Serve = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(model_repo: Path) -> Serve:
    @asynccontextmanager
    async def _serve(**overrides: Any) -> AsyncIterator[Served]:
        settings = Settings(models_dir=model_repo, grpc_port=free_port(), **overrides)
        extension = GrpcExtension(settings)
        app = create_app(settings, extensions=[extension])
        async with (
            app.lifespan(),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://tabserve.test"
            ) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            yield Served(stub, http, app.state.core, extension)

    return _serve


@pytest.fixture(scope="module")
def rows(model_repo: Path) -> np.ndarray:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        out: np.ndarray = data["X"][:40].astype(np.float32)
    return out


def raw_request(model: str, rows: np.ndarray, **fields: Any) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=fields.pop("input_name", "input"),
        datatype=fields.pop("datatype", "FP32"),
        shape=fields.pop("shape", list(rows.shape)),
    )
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor],
        raw_input_contents=[np.ascontiguousarray(rows, dtype="<f4").tobytes()],
        **fields,
    )


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


# --- health and metadata -------------------------------------------------------------------------


async def test_health_and_metadata(serve: Serve) -> None:
    async with serve() as s:
        assert (await s.stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await s.stub.ServerReady(pb.ServerReadyRequest())).ready
        meta = await s.stub.ServerMetadata(pb.ServerMetadataRequest())
        assert meta.name == "tabserve" and "binary_tensor_data" in meta.extensions
        assert (await s.stub.ModelReady(pb.ModelReadyRequest(name="logreg"))).ready
        assert (await s.stub.ModelReady(pb.ModelReadyRequest(name="logreg", version="1"))).ready
        assert not (await s.stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
        assert not (await s.stub.ModelReady(pb.ModelReadyRequest(name="logreg", version="9"))).ready

        model = await s.stub.ModelMetadata(pb.ModelMetadataRequest(name="xgb_small"))
        http_meta = (await s.http.get("/v2/models/xgb_small")).json()
        assert model.name == "xgb_small" and list(model.versions) == ["1"]
        assert model.platform == http_meta["platform"]
        for got, want in (
            (model.inputs, http_meta["inputs"]),
            (model.outputs, http_meta["outputs"]),
        ):
            assert [(t.name, t.datatype, list(t.shape)) for t in got] == [
                (t["name"], t["datatype"], t["shape"]) for t in want
            ]
        assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
            ("input", "FP32", [-1, 24])
        ]

        code, detail = await status_of(s.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")))
        assert (code, detail) == (Code.NOT_FOUND, "no model named 'nope'")
        code, detail = await status_of(
            s.stub.ModelMetadata(pb.ModelMetadataRequest(name="logreg", version="01"))
        )
        assert code == Code.NOT_FOUND and "'01'" in detail


# --- infer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["logreg", "xgb_small"])
async def test_raw_infer_equals_v1(serve: Serve, rows: np.ndarray, model: str) -> None:
    async with serve() as s:
        reply = await s.stub.ModelInfer(raw_request(model, rows[:5], id="abc"))
        v1 = (
            await s.http.post(f"/v1/models/{model}/predict", json={"instances": rows[:5].tolist()})
        ).json()
    assert (reply.model_name, reply.model_version, reply.id) == (model, "1", "abc")
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("probabilities", "FP32", [5, 2]),
        ("label", "INT64", [5]),
    ]
    assert not any(o.HasField("contents") for o in reply.outputs)
    probabilities = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(5, 2)
    labels = np.frombuffer(reply.raw_output_contents[1], "<i8")
    np.testing.assert_array_equal(probabilities, [p["scores"] for p in v1["predictions"]])
    assert labels.tolist() == [p["label"] for p in v1["predictions"]]


async def test_typed_contents_in_typed_contents_out(serve: Serve, rows: np.ndarray) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input",
        datatype="FP32",
        shape=[2, 24],
        contents=pb.InferTensorContents(fp32_contents=rows[:2].ravel().tolist()),
    )
    request = pb.ModelInferRequest(
        model_name="logreg",
        model_version="1",
        inputs=[tensor],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
    )
    async with serve() as s:
        reply = await s.stub.ModelInfer(request)
        v1 = (
            await s.http.post("/v1/models/logreg/predict", json={"instances": rows[:2].tolist()})
        ).json()
    assert not reply.raw_output_contents
    assert [o.name for o in reply.outputs] == ["label"]
    assert list(reply.outputs[0].contents.int64_contents) == [p["label"] for p in v1["predictions"]]
    assert reply.id  # a request id of the server's when the client gave none


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            {"input_name": "x"},
            "model logreg has no input 'x'; its input is 'input' (FP32 [-1, 24])",
        ),
        ({"datatype": "FP64"}, "input 'input' is FP32 (see the model's metadata), got 'FP64'"),
        ({"shape": [2, 12]}, "input 'input' has shape [rows, 24] (see the model's metadata)"),
        ({"shape": [3, 24]}, "tensor 'input': 192 bytes of data; shape [3, 24] of FP32 takes 288"),
        (
            {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="score")]},
            "model logreg has no output 'score'; its outputs are ['probabilities', 'label']",
        ),
    ],
)
async def test_invalid_requests_are_invalid_argument_naming_the_problem(
    serve: Serve, rows: np.ndarray, change: dict[str, Any], detail: str
) -> None:
    async with serve() as s:
        code, got = await status_of(s.stub.ModelInfer(raw_request("logreg", rows[:2], **change)))
    assert code == Code.INVALID_ARGUMENT
    assert got.startswith(detail)


async def test_values_and_contents_are_checked(serve: Serve, rows: np.ndarray) -> None:
    bad = rows[:2].copy()
    bad[1, 0] = np.nan  # logreg needs every value
    async with serve() as s:
        code, detail = await status_of(s.stub.ModelInfer(raw_request("logreg", bad)))
        assert code == Code.INVALID_ARGUMENT and "row 1 feature" in detail
        # xgb_small takes missing values: NaN is a missing value there
        assert (await s.stub.ModelInfer(raw_request("xgb_small", bad))).raw_output_contents

        both = raw_request("logreg", rows[:1])
        both.inputs[0].contents.fp32_contents.extend(rows[0].tolist())
        code, detail = await status_of(s.stub.ModelInfer(both))
        assert code == Code.INVALID_ARGUMENT and "use one or the other" in detail

        typed = pb.ModelInferRequest(model_name="logreg")
        typed.inputs.add(name="input", datatype="FP32", shape=[1, 24])
        typed.inputs[0].contents.fp64_contents.extend(rows[0].tolist())
        code, detail = await status_of(s.stub.ModelInfer(typed))
        assert code == Code.INVALID_ARGUMENT and "go in fp32_contents, not fp64_contents" in detail


async def test_row_limit_and_unknown_models(serve: Serve, rows: np.ndarray) -> None:
    async with serve(max_request_rows=4) as s:
        code, detail = await status_of(s.stub.ModelInfer(raw_request("logreg", rows[:5])))
        assert (code, detail) == (Code.INVALID_ARGUMENT, "5 rows in one request; the limit is 4")
        code, detail = await status_of(s.stub.ModelInfer(raw_request("nope", rows[:1])))
        assert (code, detail) == (Code.NOT_FOUND, "no model named 'nope'")
        request = raw_request("logreg", rows[:1], model_version="7")
        code, detail = await status_of(s.stub.ModelInfer(request))
        assert code == Code.NOT_FOUND and "has no version 7" in detail


# --- shared with HTTP: queue, deadlines, drain, metrics ------------------------------------------


async def test_full_queue_is_resource_exhausted_then_recovers(
    serve: Serve, rows: np.ndarray
) -> None:
    import asyncio

    many = rows[:10]
    # inference in a worker thread (as for costly models): calls queue while a batch runs
    async with serve(max_queue_rows=30, max_batch_rows=10, inline_max_cost_us=0) as s:
        calls = [s.stub.ModelInfer(raw_request("xgb_small", many)) for _ in range(40)]
        # Hold the event loop (which the server shares) while the calls arrive, so the server
        # takes them all up at once, as a burst: a few fill the queue, the rest are refused.
        asyncio.get_running_loop().call_soon(time.sleep, 1.0)
        results = await asyncio.gather(*calls, return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert refused and len(refused) < len(results)
        for r in refused:
            assert r.code() == Code.RESOURCE_EXHAUSTED and "queued" in (r.details() or "")
            assert dict(r.trailing_metadata() or ())["retry-after"] == "1"
        # recovery: once the queue drained, calls are served again
        again = await asyncio.gather(
            *(s.stub.ModelInfer(raw_request("xgb_small", many)) for _ in range(2))
        )
        assert all(len(r.raw_output_contents) == 2 for r in again)
        metrics = (await s.http.get("/metrics")).text
    line = f'tabserve_rejected_requests_total{{model="xgb_small",version="1"}} {len(refused)}.0'
    assert line in metrics


async def test_client_deadline_is_the_request_deadline(serve: Serve, rows: np.ndarray) -> None:
    async with serve(default_deadline_ms=0) as s:
        # no client deadline: the server's default (here 0 ms) applies, and the call is not run
        code, detail = await status_of(s.stub.ModelInfer(raw_request("logreg", rows[:1])))
        assert code == Code.DEADLINE_EXCEEDED and "deadline passed" in detail
        # a client deadline replaces the default
        reply = await s.stub.ModelInfer(raw_request("logreg", rows[:1]), timeout=30)
        assert len(reply.raw_output_contents) == 2
        stats = s.core.registry.get("logreg").batcher.stats
        assert stats.expired == 1


async def test_metrics_count_grpc_and_http_together(serve: Serve, rows: np.ndarray) -> None:
    async with serve() as s:
        for _ in range(3):
            await s.stub.ModelInfer(raw_request("logreg", rows[:2]))
        await s.http.post("/v1/models/logreg/predict", json={"instances": rows[:2].tolist()})
        await status_of(s.stub.ModelInfer(raw_request("logreg", rows[:2], input_name="x")))
        stats = s.core.registry.get("logreg").batcher.stats
        metrics = (await s.http.get("/metrics")).text
    assert stats.rows_inferred == 8
    assert 'tabserve_requests_total{model="logreg",version="1"} 5.0' in metrics
    assert 'tabserve_request_duration_seconds_count{model="logreg",status="200"} 4.0' in metrics
    assert 'tabserve_request_duration_seconds_count{model="logreg",status="400"} 1.0' in metrics


async def test_draining_batchers_answer_unavailable(serve: Serve, rows: np.ndarray) -> None:
    async with serve() as s:
        await s.core.registry.close()  # what shutdown starts with (server.connections)
        assert not (await s.stub.ServerReady(pb.ServerReadyRequest())).ready
        code, detail = await status_of(s.stub.ModelInfer(raw_request("logreg", rows[:1])))
        assert code == Code.UNAVAILABLE and "shutting down" in detail


async def test_shutdown_stops_new_calls_and_finishes_running_ones(
    serve: Serve, rows: np.ndarray
) -> None:
    import asyncio

    # inference in a worker thread, so the first calls are still running when shutdown starts
    async with serve(inline_max_cost_us=0) as s:
        stats = s.core.registry.get("xgb_small").batcher.stats
        running = [s.stub.ModelInfer(raw_request("xgb_small", rows[:20])) for _ in range(8)]
        asyncio.get_running_loop().call_soon(time.sleep, 0.5)  # let them all arrive
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        s.grpc.draining()  # as the app's lifespan calls it when shutdown starts
        code, _ = await status_of(s.stub.ModelInfer(raw_request("xgb_small", rows[:1])))
        results = await asyncio.gather(*running, return_exceptions=True)
    # refused by the transport, or CANCELLED by grpcio if it had reached it: never run
    assert code in (Code.UNAVAILABLE, Code.CANCELLED)
    answered = [r for r in results if not isinstance(r, BaseException)]
    others = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert answered and others <= {Code.CANCELLED}
    assert stats.rows_inferred == 20 * len(answered)


def test_every_domain_error_has_a_status() -> None:
    cases = {
        errors.InvalidInput("x"): Code.INVALID_ARGUMENT,
        errors.PayloadTooLarge("x"): Code.INVALID_ARGUMENT,
        errors.ModelNotFound("x"): Code.NOT_FOUND,
        errors.VersionNotFound("x"): Code.NOT_FOUND,
        errors.Overloaded("x", retry_after=2.5): Code.RESOURCE_EXHAUSTED,
        errors.DeadlineExceeded("x"): Code.DEADLINE_EXCEEDED,
        errors.ShuttingDown("x"): Code.UNAVAILABLE,
        errors.ModelNotReady("x"): Code.UNAVAILABLE,
        errors.CacheUnavailable("x"): Code.UNAVAILABLE,
    }
    for exc, code in cases.items():
        error = grpc_error(exc, "rid")
        assert (error.code, error.message) == (code, "x")
        assert ("x-request-id", "rid") in error.trailers
    assert ("retry-after", "3") in grpc_error(errors.Overloaded("x", 2.5), "r").trailers
    unexpected = grpc_error(ValueError("secret internals"), "rid")
    assert unexpected.code == Code.INTERNAL and "secret" not in unexpected.message
