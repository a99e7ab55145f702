"""The REST binary tensor extension and the raw tensor layout, alone (no server).

Requests are made by ``tritonclient.http``'s own body generator and answers read by its own
parser, so the layout is checked against the client that users run, not against our reading of
the specification.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from server.errors import InvalidInput, PayloadTooLarge
from server.modelcard import ModelCard, load_card
from server.oip.binary import InferSpec, decode_request, encode_response, header_length
from server.oip.schema import CLASSIFIER_OUTPUTS
from server.oip.tensors import bytes_from_raw, bytes_to_raw, from_raw, to_raw


@pytest.fixture(scope="module")
def card(model_repo: Path) -> ModelCard:
    return load_card(model_repo / "logreg" / "1")


def rows_of(card: ModelCard, n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, card.input.n_features)).astype(np.float32)


def triton_body(
    inputs: list[triton_http.InferInput], outputs: list[triton_http.InferRequestedOutput] | None
) -> tuple[bytes, int]:
    body, json_size = triton_http.InferenceServerClient.generate_request_body(inputs, outputs)
    return body, json_size if json_size is not None else len(body)


def triton_input(name: str, array: np.ndarray, datatype: str = "FP32") -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # binary_data=True: the client's default
    return tensor


# --- the raw layout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.array([[1.5, -2.0], [np.nan, 3.25]], dtype=np.float32)),
        ("FP64", np.array([1e300, -0.0, 2.5])),
        ("INT64", np.array([[-(2**62), 0, 7]], dtype=np.int64)),
        ("BOOL", np.array([True, False, True])),
    ],
)
def test_fixed_size_tensors_round_trip_little_endian(datatype: str, array: np.ndarray) -> None:
    raw = to_raw(array, datatype)
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    back = from_raw(raw, datatype, list(array.shape), "t")
    np.testing.assert_array_equal(back, array)


def test_bytes_tensors_are_length_prefixed() -> None:
    raw = bytes_to_raw([b"ab", "é", b""])
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "é".encode() + b"\0" * 4
    assert bytes_from_raw(raw, 3, "t") == [b"ab", "é".encode(), b""]
    back = from_raw(raw, "BYTES", [3, 1], "t")
    assert back.shape == (3, 1) and back[0, 0] == b"ab"


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        (b"\0" * 7, "FP32", [2], "7 bytes of data; shape [2] of FP32 takes 8"),
        (b"\2", "BOOL", [1], "BOOL bytes must be 0 or 1"),
        (b"\0" * 8, "FP8", [1], "unknown datatype 'FP8'"),
        (struct.pack("<I", 5) + b"abc", "BYTES", [1], "element 0 says 5 bytes, 3 are left"),
        (struct.pack("<I", 1) + b"ab", "BYTES", [1], "1 bytes of BYTES data left"),
        (b"\1\0", "BYTES", [1], "ends before element 0 of 1"),
        (b"", "FP32", [-1, 2], "negative dimension"),
    ],
)
def test_bad_raw_tensors_are_named(
    raw: bytes, datatype: str, shape: list[int], message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)) as info:
        from_raw(raw, datatype, shape, "feats")
    assert "'feats'" in info.value.detail


# --- requests ------------------------------------------------------------------------------------


def test_tritonclient_default_request_decodes_to_its_rows(card: ModelCard) -> None:
    rows = rows_of(card, 3)
    body, json_size = triton_body([triton_input("input", rows)], None)
    got, spec = decode_request(body, json_size, card, 100)
    np.testing.assert_array_equal(got, rows)
    assert got.dtype == np.float32
    # no outputs named: tritonclient asks for every output in binary (binary_data_output)
    assert spec == InferSpec(None, CLASSIFIER_OUTPUTS, (True, True))


def test_requested_outputs_choose_binary_or_json_each(card: ModelCard) -> None:
    rows = rows_of(card, 2)
    outputs = [
        triton_http.InferRequestedOutput("label", binary_data=False),
        triton_http.InferRequestedOutput("probabilities"),
    ]
    body, json_size = triton_body([triton_input("input", rows)], outputs)
    _, spec = decode_request(body, json_size, card, 100)
    assert spec.outputs == ("label", "probabilities")
    assert spec.binary == (False, True)


def test_json_data_inside_a_binary_request_is_read(card: ModelCard) -> None:
    rows = rows_of(card, 2)
    json_input = triton_http.InferInput("input", list(rows.shape), "FP32")
    json_input.set_data_from_numpy(rows, binary_data=False)
    body, _ = triton_body([json_input], None)
    got, _ = decode_request(body, len(body), card, 100)
    np.testing.assert_array_equal(got, rows)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([("x", "FP32", 1)], "model logreg has no input 'x'; its input is 'input'"),
        ([("input", "FP64", 1)], "input 'input' is FP32 .*got 'FP64'"),
        ([("input", "FP32", 1), ("extra", "FP32", 1)], "no input 'extra'"),
        ([("input", "FP32", 1), ("input", "FP32", 1)], "given more than once"),
        ([], "input 'input' .* is missing"),
    ],
)
def test_inputs_must_be_the_models(
    card: ModelCard, inputs: list[tuple[str, str, int]], message: str
) -> None:
    tensors = []
    for name, datatype, n in inputs:
        rows = rows_of(card, n).astype(np.float64 if datatype == "FP64" else np.float32)
        tensors.append(triton_input(name, rows, datatype))
    body, json_size = (
        triton_body(tensors, None) if tensors else (b'{"inputs": []}', len(b'{"inputs": []}'))
    )
    with pytest.raises(InvalidInput, match=message):
        decode_request(body, json_size, card, 100)


def test_shape_and_row_limit_follow_the_metadata(card: ModelCard) -> None:
    wrong = np.zeros((2, card.input.n_features + 1), dtype=np.float32)
    body, json_size = triton_body([triton_input("input", wrong)], None)
    with pytest.raises(InvalidInput, match=r"shape \[rows, 24\].*got \[2, 25\]"):
        decode_request(body, json_size, card, 100)
    body, json_size = triton_body([triton_input("input", rows_of(card, 5))], None)
    with pytest.raises(PayloadTooLarge, match="5 rows in one request; the limit is 4"):
        decode_request(body, json_size, card, 4)


def test_binary_sizes_must_fill_the_body_exactly(card: ModelCard) -> None:
    body, json_size = triton_body([triton_input("input", rows_of(card, 1))], None)
    with pytest.raises(InvalidInput, match="binary_data_size 96 runs past the end"):
        decode_request(body[:-1], json_size, card, 100)
    with pytest.raises(InvalidInput, match=r"97 bytes after its JSON part.*add up to 96"):
        decode_request(body + b"\0", json_size, card, 100)


def test_values_are_checked_as_json_values_are(card: ModelCard) -> None:
    rows = rows_of(card, 2)
    rows[1, 3] = np.inf
    body, json_size = triton_body([triton_input("input", rows)], None)
    with pytest.raises(InvalidInput, match=r"row 1 feature .* is missing \(NaN\) or infinite"):
        decode_request(body, json_size, card, 100)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b'{"inputs": [', "are not a JSON infer request"),
        (b'{"inputs": 3}', "invalid request header"),
    ],
)
def test_malformed_headers_are_400(card: ModelCard, header: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_request(header, len(header), card, 100)


def test_header_length_value() -> None:
    assert header_length(b"12", 20) == 12
    with pytest.raises(InvalidInput, match="must be the length in bytes"):
        header_length(b"-1", 20)
    with pytest.raises(InvalidInput, match="is 30, but the body has 20 bytes"):
        header_length(b"30", 20)


def test_unknown_outputs_and_bad_flags_are_400(card: ModelCard) -> None:
    rows = rows_of(card, 1)
    outputs = [triton_http.InferRequestedOutput("score")]
    body, json_size = triton_body([triton_input("input", rows)], outputs)
    with pytest.raises(InvalidInput, match="has no output 'score'"):
        decode_request(body, json_size, card, 100)
    outputs = [triton_http.InferRequestedOutput("label")]
    body, json_size = triton_body([triton_input("input", rows)], outputs)
    header = body[:json_size].replace(b'"binary_data":true', b'"binary_data":"yes"')
    with pytest.raises(InvalidInput, match="parameter 'binary_data' of output 'label' must be"):
        decode_request(header + body[json_size:], len(header), card, 100)


# --- responses -----------------------------------------------------------------------------------


def test_binary_answer_reads_back_in_tritonclient(card: ModelCard) -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    body, json_size = encode_response(
        card, "r-1", InferSpec(None, CLASSIFIER_OUTPUTS, (True, True)), scores
    )
    assert json_size is not None and json_size < len(body)
    result = triton_http.InferenceServerClient.parse_response_body(body, header_length=json_size)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), scores)
    label = result.as_numpy("label")
    assert label is not None and label.dtype == np.int64
    threshold = card.metrics.threshold
    assert label.tolist() == [int(s[1] >= threshold) for s in scores.tolist()]
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_name"] == "logreg"


def test_mixed_and_json_answers(card: ModelCard) -> None:
    scores = np.array([[0.9, 0.1]], dtype=np.float32)
    spec = InferSpec("mine", ("label", "probabilities"), (False, True))
    body, json_size = encode_response(card, "r-2", spec, scores)
    result = triton_http.InferenceServerClient.parse_response_body(body, header_length=json_size)
    assert result.get_response()["id"] == "mine"
    assert result.get_output("label")["data"] == [0]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), scores)
    body, json_size = encode_response(card, "r-3", InferSpec(None, ("label",), (False,)), scores)
    assert json_size is None
    assert triton_http.InferenceServerClient.parse_response_body(body).as_numpy("label") == [0]
