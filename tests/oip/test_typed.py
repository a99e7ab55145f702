"""Typed models (string, boolean, int-category columns; string labels, multiclass, regression) on
every Open Inference Protocol front door of a real ``tabserve serve`` process: ``/v2`` JSON
(including a request exactly as MLServer's ``PandasCodec`` encodes a DataFrame), the REST binary
tensor extension (``tritonclient.http``), and gRPC (``tritonclient.grpc`` raw tensors and the
protocol's typed contents). Answers are compared with the fitted scikit-learn pipelines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from server.oip import grpc_predict_v2_pb2 as pb
from server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.oip.typed_models import Built, build, frame, native_frame
from tests.support.ports import free_port
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

TOLERANCE = 1e-4


class Running:
    def __init__(self, server: ServerProcess, grpc_port: int, models: dict[str, Built]) -> None:
        self.server = server
        self.url = server.url
        self.grpc_url = f"127.0.0.1:{grpc_port}"
        self.models = models


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    repo = tmp_path_factory.mktemp("typed_models")
    models = build(repo)
    grpc_port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = ServerProcess(repo, env={"TABSERVE_GRPC_PORT": str(grpc_port)}, log_path=log)
    server.start()
    try:
        yield Running(server, grpc_port, models)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rows = frame(25, seed=7)
    rows.loc[3, "region"] = "mars"  # unseen: OneHotEncoder(handle_unknown="ignore") serves it
    return rows


def pandas_codec_request(df: pd.DataFrame) -> dict[str, Any]:
    """The JSON body ``mlserver.codecs.PandasCodec.encode_request(df)`` makes, written out.

    As read in SeldonIO/MLServer ``mlserver/codecs/pandas.py`` (``encode_request`` →
    ``_to_response_output`` per column) and ``mlserver/codecs/utils.py``
    (``inject_batch_dimension``): one input per column, named as the column; ``shape`` is the
    column's shape with a batch dimension added, ``[n, 1]``; the datatype from the column's
    dtype (object → BYTES, int64 → INT64, float64 → FP64, bool → BOOL); a column of strings
    carries ``parameters.content_type = "str"`` (its bytes serialise to JSON as text); the
    request carries ``parameters.content_type = "pd"``.
    """
    datatypes = {"object": "BYTES", "int64": "INT64", "float64": "FP64", "bool": "BOOL"}
    datatypes["str"] = datatypes["string"] = "BYTES"  # pandas' string dtypes
    inputs = []
    for name in df.columns:
        series = df[name]
        entry: dict[str, Any] = {
            "name": name,
            "shape": [len(series), 1],
            "datatype": datatypes[str(series.dtype)],
            "data": series.tolist(),
        }
        if entry["datatype"] == "BYTES":
            entry["parameters"] = {"content_type": "str"}
        inputs.append(entry)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def native(built: Built, df: pd.DataFrame) -> np.ndarray:
    x = native_frame(df)
    if built.task == "regression":
        return np.asarray(built.pipeline.predict(x), dtype=np.float64)
    return np.asarray(built.pipeline.predict_proba(x), dtype=np.float64)


def native_labels(built: Built, df: pd.DataFrame) -> list[Any]:
    return [
        v.item() if isinstance(v, np.generic) else v
        for v in built.pipeline.predict(native_frame(df))
    ]


def outputs_of(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in answer["outputs"]}


def check_answer(built: Built, df: pd.DataFrame, answer: dict[str, Any]) -> None:
    out = outputs_of(answer)
    n = len(df)
    if built.task == "regression":
        assert list(out) == ["value"]
        assert out["value"]["datatype"] == "FP32" and out["value"]["shape"] == [n]
        np.testing.assert_allclose(out["value"]["data"], native(built, df), rtol=1e-5, atol=1e-3)
        return
    k = len(built.classes)
    assert list(out) == ["probabilities", "label"]
    assert out["probabilities"]["shape"] == [n, k]
    probabilities = np.array(out["probabilities"]["data"]).reshape(n, k)
    np.testing.assert_allclose(probabilities, native(built, df), atol=TOLERANCE)
    string_labels = isinstance(built.classes[0], str)
    assert out["label"]["datatype"] == ("BYTES" if string_labels else "INT64")
    assert out["label"]["data"] == native_labels(built, df)


# --- metadata ------------------------------------------------------------------------------------


def test_metadata_states_one_input_per_column_and_outputs_per_task(running: Running) -> None:
    inputs = [
        {"name": "region", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "amount", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "member", "datatype": "BOOL", "shape": [-1, 1]},
        {"name": "tier", "datatype": "INT64", "shape": [-1, 1]},
    ]
    wanted = {
        "churn": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "segment": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
        "price": [{"name": "value", "datatype": "FP32", "shape": [-1]}],
    }
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        for name, outputs in wanted.items():
            meta = httpx.get(f"{running.url}/v2/models/{name}").json()
            assert meta["inputs"] == inputs and meta["outputs"] == outputs
            assert httpx.get(f"{running.url}/v2/models/{name}/versions/1").json() == meta
            grpc_meta = client.get_model_metadata(name, as_json=True)
            assert [(t["name"], t["datatype"]) for t in grpc_meta["inputs"]] == [
                (t["name"], t["datatype"]) for t in inputs
            ]
            assert [t["shape"] for t in grpc_meta["outputs"]] == [
                [str(d) for d in t["shape"]] for t in outputs
            ]
    finally:
        client.close()


# --- /v2 JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["churn", "segment", "price"])
def test_pandas_codec_request_is_answered_as_the_native_model(
    running: Running, df: pd.DataFrame, name: str
) -> None:
    body = pandas_codec_request(df)
    assert [i["datatype"] for i in body["inputs"]] == ["BYTES", "FP64", "BOOL", "INT64"]
    r = httpx.post(f"{running.url}/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == name and answer["model_version"] == "1"
    check_answer(running.models[name], df, answer)


def test_stated_datatypes_flat_shapes_and_requested_outputs(
    running: Running, df: pd.DataFrame
) -> None:
    """As the metadata states (FP32, [n]) and with nested one-value rows; one output asked."""
    n = len(df)
    body = {
        "inputs": [
            {"name": "tier", "datatype": "INT64", "shape": [n], "data": df["tier"].tolist()},
            {
                "name": "region",
                "datatype": "BYTES",
                "shape": [n, 1],
                "data": [[v] for v in df["region"]],
            },
            {"name": "member", "datatype": "BOOL", "shape": [n], "data": df["member"].tolist()},
            {"name": "amount", "datatype": "FP32", "shape": [n], "data": df["amount"].tolist()},
        ],
        "outputs": [{"name": "label"}],
    }
    answer = httpx.post(f"{running.url}/v2/models/churn/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == native_labels(running.models["churn"], df)


def test_a_large_body_is_answered_as_a_small_one(running: Running) -> None:
    big = frame(8000, seed=11)
    body = json.dumps(pandas_codec_request(big)).encode()
    assert len(body) > 128 * 1024  # over server.large_bodies.LARGE_BODY: the sliced path
    r = httpx.post(
        f"{running.url}/v2/models/segment/infer",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30.0,
    )
    assert r.status_code == 200, r.text
    check_answer(running.models["segment"], big, r.json())


def _body(df: pd.DataFrame) -> dict[str, Any]:
    return pandas_codec_request(df.iloc[:2].reset_index(drop=True))


ERRORS: list[tuple[str, Any, str]] = [
    (
        "unknown input",
        lambda b: b["inputs"][1].update(name="amt"),
        "input `amt`: unknown; did you mean `amount`?",
    ),
    ("missing input", lambda b: b["inputs"].pop(2), "input `member` is missing"),
    ("repeated input", lambda b: b["inputs"].append(b["inputs"][0]), "`region` is given more"),
    (
        "string datatype for a number",
        lambda b: b["inputs"][1].update(datatype="BYTES", data=["1.5", "2"]),
        "input `amount` takes numbers",
    ),
    (
        "a string where a number belongs",
        lambda b: b["inputs"][1].update(data=["1.5", 2.0]),
        "input `amount`: `data[0]` (row 0) is a string",
    ),
    (
        "a number where a string belongs",
        lambda b: b["inputs"][0].update(data=["north", 4]),
        "input `region`: `data[1]` (row 1) is a number",
    ),
    ("number datatype for strings", lambda b: b["inputs"][0].update(datatype="FP32"), "`region`"),
    ("null not allowed", lambda b: b["inputs"][1].update(data=[None, 1.0]), "column 'amount'"),
    (
        "unseen category refused",
        lambda b: b["inputs"][3].update(data=[1, 9]),
        "row 1 column 'tier': 9 is not a known category",
    ),
    ("not a whole number", lambda b: b["inputs"][3].update(data=[1, 2.5]), "column 'tier'"),
    ("not a boolean", lambda b: b["inputs"][2].update(datatype="INT64", data=[1, 2]), "'member'"),
    (
        "row counts differ",
        lambda b: b["inputs"][1].update(shape=[3, 1], data=[1.0, 2.0, 3.0]),
        "input `amount` has 3 rows, input `region` has 2",
    ),
    (
        "data does not fill the shape",
        lambda b: b["inputs"][1].update(data=[1.0]),
        "input `amount` has 1 values for shape [2, 1]",
    ),
    (
        "more values than rows",
        lambda b: b["inputs"][1].update(data=[1.0] * 5000),
        "input `amount` has 5000 values in `data` for 2 rows",
    ),
    ("wide shape", lambda b: b["inputs"][1].update(shape=[1, 2]), "input `amount` has shape"),
    ("unknown output", lambda b: b.update(outputs=[{"name": "value"}]), "no output 'value'"),
]


@pytest.mark.parametrize(("case", "edit", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_every_error_is_a_400_naming_the_column(
    running: Running, df: pd.DataFrame, case: str, edit: Any, message: str
) -> None:
    body = _body(df)
    edit(body)
    r = httpx.post(f"{running.url}/v2/models/churn/infer", json=body)
    assert r.status_code == 400, (case, r.text)
    problem = r.json()
    assert problem["status"] == 400 and message in problem["detail"], problem["detail"]
    assert problem["error"] == problem["detail"]


# --- REST binary tensors and gRPC ----------------------------------------------------------------


def _arrays(df: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    return [
        ("region", "BYTES", df[["region"]].to_numpy().astype(object)),
        ("amount", "FP32", df[["amount"]].to_numpy().astype(np.float32)),
        ("member", "BOOL", df[["member"]].to_numpy().astype(bool)),
        ("tier", "INT64", df[["tier"]].to_numpy().astype(np.int64)),
    ]


def _check_triton(built: Built, df: pd.DataFrame, result: Any) -> None:
    if built.task == "regression":
        value = result.as_numpy("value")
        assert value.shape == (len(df),)
        np.testing.assert_allclose(value, native(built, df), rtol=1e-5, atol=1e-3)
        return
    np.testing.assert_allclose(result.as_numpy("probabilities"), native(built, df), atol=TOLERANCE)
    label = result.as_numpy("label").tolist()
    if isinstance(built.classes[0], str):
        label = [v.decode() for v in label]
    assert label == native_labels(built, df)


@pytest.mark.parametrize("name", ["churn", "segment", "price"])
def test_tritonclient_http_binary_tensors(running: Running, df: pd.DataFrame, name: str) -> None:
    client = triton_http.InferenceServerClient(running.url.removeprefix("http://"))
    try:
        inputs = []
        for column, datatype, array in _arrays(df):
            tensor = triton_http.InferInput(column, list(array.shape), datatype)
            # one input as JSON `data` inside the binary request, the others binary
            tensor.set_data_from_numpy(array, binary_data=column != "amount")
            inputs.append(tensor)
        result = client.infer(name, inputs)
        _check_triton(running.models[name], df, result)
        response = result.get_response()
        assert all("binary_data_size" in o.get("parameters", {}) for o in response["outputs"])
    finally:
        client.close()


@pytest.mark.parametrize("name", ["churn", "segment", "price"])
def test_tritonclient_grpc_bytes_inputs(running: Running, df: pd.DataFrame, name: str) -> None:
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        inputs = []
        for column, datatype, array in _arrays(df):
            tensor = triton_grpc.InferInput(column, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        _check_triton(running.models[name], df, client.infer(name, inputs))
        wrong = triton_grpc.InferInput("regoin", [len(df), 1], "BYTES")
        wrong.set_data_from_numpy(_arrays(df)[0][2])
        with pytest.raises(InferenceServerException) as caught:
            client.infer(name, [wrong, *inputs[1:]])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "did you mean `region`?" in str(caught.value.message())
    finally:
        client.close()


def _typed_request(name: str, df: pd.DataFrame, **change: Any) -> Any:
    n = len(df)
    contents = {
        "region": (
            "BYTES",
            pb.InferTensorContents(bytes_contents=[v.encode() for v in df["region"]]),
        ),
        "amount": ("FP64", pb.InferTensorContents(fp64_contents=df["amount"].tolist())),
        "member": ("BOOL", pb.InferTensorContents(bool_contents=df["member"].tolist())),
        "tier": ("INT64", pb.InferTensorContents(int64_contents=df["tier"].tolist())),
    }
    contents.update(change)
    tensors = [
        pb.ModelInferRequest.InferInputTensor(
            name=column, datatype=datatype, shape=[n, 1], contents=values
        )
        for column, (datatype, values) in contents.items()
    ]
    return pb.ModelInferRequest(model_name=name, inputs=tensors)


def test_grpc_typed_contents_and_string_labels(running: Running, df: pd.DataFrame) -> None:
    with grpc.insecure_channel(running.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for name, built in running.models.items():
            response = stub.ModelInfer(_typed_request(name, df), timeout=10)
            out = {o.name: o for o in response.outputs}
            if built.task == "regression":
                np.testing.assert_allclose(
                    out["value"].contents.fp32_contents, native(built, df), rtol=1e-5, atol=1e-3
                )
                continue
            probabilities = np.array(out["probabilities"].contents.fp32_contents)
            np.testing.assert_allclose(
                probabilities.reshape(len(df), -1), native(built, df), atol=TOLERANCE
            )
            label = out["label"]
            if isinstance(built.classes[0], str):
                assert label.datatype == "BYTES"
                got: list[Any] = [v.decode() for v in label.contents.bytes_contents]
            else:
                assert label.datatype == "INT64"
                got = list(label.contents.int64_contents)
            assert got == native_labels(built, df)
        bad = [
            ("amount", ("BYTES", pb.InferTensorContents(bytes_contents=[b"1"] * len(df)))),
            ("amount", ("FP64", pb.InferTensorContents(fp32_contents=[1.0] * len(df)))),
            ("tier", ("INT64", pb.InferTensorContents(int64_contents=[9] * len(df)))),
            ("region", ("BYTES", pb.InferTensorContents(bytes_contents=[b"\xff"] * len(df)))),
        ]
        for column, change in bad:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_typed_request("churn", df, **{column: change}), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert column in str(caught.value.details()), caught.value.details()
