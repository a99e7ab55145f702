"""The bundled e-commerce models with string columns (``tests/support/model_repo.py``: a pricing
regressor and a 5-class returns classifier with string labels, each as a scikit-learn pipeline
over the raw strings and as XGBoost with native categories) over ``/v2`` JSON and gRPC of a real
``tabserve serve`` process: hold-out rows sent as raw values, one input per column, answered as
ONNX Runtime answers the row matrix they were published with."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc

from server.columns import Codec
from server.modelcard import HOLDOUT_FILE, ModelCard, load_card
from server.oip.schema import column_datatype
from tests.oip.conftest import Running
from tests.support.model_repo import TYPED_MODELS

pytestmark = pytest.mark.e2e

ROWS = 40


def holdout(model_repo: Path, name: str) -> tuple[ModelCard, np.ndarray]:
    folder = model_repo / name / "1"
    with np.load(folder / HOLDOUT_FILE) as data:
        x: np.ndarray = data["X"][:ROWS].astype(np.float32)
    return load_card(folder), x


def expected(model_repo: Path, card: ModelCard, x: np.ndarray) -> np.ndarray:
    """What ONNX Runtime answers on the row matrix (the graph the server runs)."""
    session = ort.InferenceSession(str(model_repo / card.name / "1" / card.onnx.file))
    output = card.outputs.value if card.task == "regression" else card.outputs.probabilities
    out = session.run([output], Codec(card.input).onnx_feeds(x))[0]
    return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def raw_columns(card: ModelCard, x: np.ndarray) -> list[list[Any]]:
    """Each column's raw values (strings, booleans, numbers; None for missing)."""
    codec = Codec(card.input)
    columns = []
    for j in range(card.input.n_features):
        values = codec.decode_column(j, x[:, j]).tolist()
        columns.append([None if isinstance(v, float) and math.isnan(v) else v for v in values])
    return columns


def pandas_style(card: ModelCard, columns: list[list[Any]]) -> dict[str, Any]:
    """One input per column as MLServer's PandasCodec sends a DataFrame (see test_typed)."""
    inputs = []
    for column, values in zip(card.input.columns, columns, strict=True):
        datatype = column_datatype(column)
        inputs.append(
            {
                "name": column.name,
                "shape": [len(values), 1],
                "datatype": "FP64" if datatype == "FP32" else datatype,
                "data": values,
            }
        )
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


@pytest.mark.parametrize("name", TYPED_MODELS)
def test_v2_json_answers_as_onnx_runtime(running: Running, model_repo: Path, name: str) -> None:
    card, x = holdout(model_repo, name)
    body = pandas_style(card, raw_columns(card, x))
    r = httpx.post(f"{running.url}/v2/models/{name}/infer", json=body, timeout=30.0)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    want = expected(model_repo, card, x)
    if card.task == "regression":
        assert out["value"]["shape"] == [ROWS]
        np.testing.assert_allclose(out["value"]["data"], want[:, 0], rtol=1e-6, atol=1e-4)
        return
    got = np.array(out["probabilities"]["data"], dtype=np.float32).reshape(ROWS, -1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert out["label"]["datatype"] == "BYTES"
    assert out["label"]["data"] == [card.classes[int(i)] for i in want.argmax(axis=1)]


@pytest.mark.parametrize("name", TYPED_MODELS)
def test_grpc_raw_bytes_answers_as_onnx_runtime(
    running: Running, model_repo: Path, name: str
) -> None:
    card, x = holdout(model_repo, name)
    columns = raw_columns(card, x)
    keep = [i for i in range(ROWS) if all(col[i] is not None for col in columns)]
    x = x[keep]
    client = triton_grpc.InferenceServerClient(running.grpc_url)
    try:
        inputs = []
        for column, values in zip(card.input.columns, columns, strict=True):
            datatype = column_datatype(column)
            kept = [values[i] for i in keep]
            dtype = {"BYTES": object, "BOOL": bool, "FP32": np.float32, "INT64": np.int64}
            array = np.array(kept, dtype=dtype[datatype]).reshape(-1, 1)
            tensor = triton_grpc.InferInput(column.name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(name, inputs)
    finally:
        client.close()
    want = expected(model_repo, card, x)
    if card.task == "regression":
        np.testing.assert_allclose(result.as_numpy("value"), want[:, 0], rtol=1e-6, atol=1e-4)
        return
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
    labels = [v.decode() for v in result.as_numpy("label").tolist()]
    assert labels == [card.classes[int(i)] for i in want.argmax(axis=1)]
