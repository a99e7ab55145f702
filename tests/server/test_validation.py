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
        "version-not-found",
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
    **{
        # int() reads each of these as 1; a version is written one way only
        f"version-{label}-{v}": (f"/{v}/models/logreg/versions/{text}/{verb}", body, 404, slug)
        for label, text in [
            ("plus", "+1"),
            ("underscore", "0_1"),
            ("leading-zero", "01"),
            ("space", "%201"),
            ("arabic-indic", "%D9%A1"),
        ]
        for v, verb, body in [
            ("v1", "predict", case({"instances": [ROW]})),
            (
                "v2",
                "infer",
                case(
                    {"inputs": [{"name": "i", "shape": [1, 24], "datatype": "FP32", "data": ROW}]}
                ),
            ),
        ]
        for slug in ["version-not-found"]
    },
    "v1-million-empty-rows": (
        "/v1/models/logreg/predict",
        b'{"instances": [' + b"[]," * 99_999 + b"[]]}",
        413,
        "payload-too-large",
    ),
    "v2-million-empty-rows": (
        "/v2/models/logreg/infer",
        case(
            {
                "inputs": [
                    {"name": "i", "shape": [100_000, 0], "datatype": "FP32", "data": [[]] * 100_000}
                ]
            }
        ),
        413,
        "payload-too-large",
    ),
    "v1-many-values-in-one-row": (
        "/v1/models/logreg/predict",
        b'{"instances": [[' + b"0," * 99_999 + b"0]]}",
        413,
        "payload-too-large",
    ),
    "v2-deep-nesting-data": (
        "/v2/models/logreg/infer",
        b'{"inputs": [{"name": "i", "shape": [1, 24], "datatype": "FP32", "data": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}]}",
        400,
        "invalid-input",
    ),
    "v2-deep-nesting-parameters": (
        "/v2/models/logreg/infer",
        b'{"inputs": [{"name": "i", "shape": [1, 24], "datatype": "FP32", "data": '
        + case(ROW)
        + b'}], "parameters": {"p": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}",
        400,
        "invalid-input",
    ),
    "v2-deep-nesting-input-parameters": (
        "/v2/models/logreg/infer",
        b'{"inputs": [{"name": "i", "shape": [1, 24], "datatype": "FP32", "data": '
        + case(ROW)
        + b', "parameters": {"p": '
        + b'{"a":' * 1500
        + b"1"
        + b"}" * 1500
        + b"}}]}",
        400,
        "invalid-input",
    ),
    "v2-401-digit-integer": (
        "/v2/models/logreg/infer",
        b'{"inputs": [{"name": "i", "shape": [1, 24], "datatype": "FP32", "data": ['
        + b"9" * 401
        + b", 0.5" * 23
        + b"]}]}",
        400,
        "invalid-input",
    ),
    "v2-string-number": (
        "/v2/models/logreg/infer",
        case(
            {
                "inputs": [
                    {"name": "i", "shape": [1, 24], "datatype": "FP32", "data": ["1.0", *ROW[1:]]}
                ]
            }
        ),
        400,
        "invalid-input",
    ),
    "v2-string-nan": (
        "/v2/models/xgb_small/infer",
        case(
            {
                "inputs": [
                    {"name": "i", "shape": [1, 24], "datatype": "FP32", "data": [*ROW[1:], "nan"]}
                ]
            }
        ),
        400,
        "invalid-input",
    ),
    "v2-boolean": (
        "/v2/models/logreg/infer",
        case(
            {
                "inputs": [
                    {"name": "i", "shape": [1, 24], "datatype": "FP32", "data": [[True, *ROW[1:]]]}
                ]
            }
        ),
        400,
        "invalid-input",
    ),
    "v2-mixed-flat-and-nested": (
        "/v2/models/logreg/infer",
        case(
            {"inputs": [{"name": "i", "shape": [2, 24], "datatype": "FP32", "data": [ROW, *ROW]}]}
        ),
        400,
        "invalid-input",
    ),
    "content-type-text-plain": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW]}),
        415,
        "unsupported-media-type",
    ),
    "content-type-form": (
        "/v1/models/logreg/predict",
        case({"instances": [ROW]}),
        415,
        "unsupported-media-type",
    ),
    "content-type-multipart": (
        "/v2/models/logreg/infer",
        case({"inputs": []}),
        415,
        "unsupported-media-type",
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


HEADERS: dict[str, dict[str, str]] = {
    "bad-deadline-header": {"X-Deadline-Ms": "soon"},
    "content-type-text-plain": {"content-type": "text/plain"},
    "content-type-form": {"content-type": "application/x-www-form-urlencoded"},
    "content-type-multipart": {"content-type": "multipart/form-data; boundary=x"},
}
"""Headers a case sends besides (or instead of) ``Content-Type: application/json``."""


def headers_of(case_id: str) -> dict[str, str]:
    return {"content-type": "application/json", **HEADERS.get(case_id, {})}


PROBLEM_MEMBERS = ["type", "title", "status", "detail", "request_id", "error"]


@pytest.mark.parametrize("case_id", sorted(BAD_BODIES))
async def test_bad_input_gets_a_problem(make_client: MakeClient, case_id: str) -> None:
    path, body, status, slug = BAD_BODIES[case_id]
    headers = headers_of(case_id)
    async with make_client(max_request_rows=10) as client:
        r = await client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == f"urn:tabserve:problem:{slug}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == r.headers["x-request-id"]
    assert list(problem) == PROBLEM_MEMBERS  # one shape on /v1 and /v2
    assert problem["error"] == problem["detail"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda row: {**row, "surprise": 1.0}, "row 0: `surprise`: unknown feature"),
        (
            lambda row: {k: v for k, v in row.items() if k != "amount"},
            "row 0: missing features `amount`",
        ),
        (
            lambda row: {("amt" if k == "amount" else k): v for k, v in row.items()},
            "row 0: `amt`: unknown feature; did you mean `amount`?",
        ),
        (
            lambda row: {**row, "amount": "12.5"},
            "row 0 feature `amount`: expected a number, got a string",
        ),
        (
            lambda row: {**row, "amount": True},
            "row 0 feature `amount`: expected a number, got true or false",
        ),
    ],
    ids=["unknown-name", "missing-name", "misspelt-name", "string-value", "boolean-value"],
)
async def test_named_features_must_match_the_schema(
    make_client: MakeClient, model_repo: Path, mutate: object, expected: str
) -> None:
    row = mutate(named_row(model_repo))  # type: ignore[operator]
    async with make_client() as client:
        r = await client.post("/v1/models/logreg/predict", json={"instances": [row]})
    assert r.status_code == 400
    assert expected in r.json()["detail"]


async def test_a_misspelt_feature_is_named_once(make_client: MakeClient, model_repo: Path) -> None:
    row = {("amt" if k == "amount" else k): v for k, v in named_row(model_repo).items()}
    async with make_client() as client:
        r = await client.post("/v1/models/logreg/predict", json={"instances": [row, row]})
    assert r.json()["detail"] == "row 0: `amt`: unknown feature; did you mean `amount`?"


@pytest.mark.parametrize(
    "case_id, expected",
    [
        (
            "no-instances",
            '`instances` is missing: a /v1 body is {{"instances": [row, ...]}} '
            "(this one has `rows`)",
        ),
        ("non-numeric", "row 0 feature `{0}`: expected a number, got a string"),
        ("boolean", "row 0 feature `{0}`: expected a number, got true or false"),
        ("v2-string-number", "`data[0]` (row 0 feature `{0}`): expected a number, got a string"),
        (
            "v2-string-nan",
            "`data[23]` (row 0 feature `{23}`): expected a number or null, got a string",
        ),
        ("v2-boolean", "`data[0][0]` (row 0 feature `{0}`): expected a number, got true or false"),
        ("v2-401-digit-integer", "`data[0]` (row 0 feature `{0}`): number out of range"),
        (
            "v2-deep-nesting-data",
            "`data[0][0]` (row 0 feature `{0}`): nested deeper than [rows, features]",
        ),
        ("v2-deep-nesting-parameters", "JSON nested too deeply"),
        ("v1-million-empty-rows", "refused before decoding"),
        ("v1-many-values-in-one-row", "refused before decoding"),
        ("content-type-text-plain", "Content-Type text/plain is not JSON"),
        (
            "content-type-form",
            "(what curl -d sends) is not JSON; send Content-Type: application/json (curl: "
            "add -H 'Content-Type: application/json', or use --json)",
        ),
        (
            "version-plus-v1",
            "model logreg has no version '+1': a version is a plain decimal integer",
        ),
        ("version-arabic-indic-v2", "model logreg has no version '\u0661'"),
    ],
)
async def test_problems_say_what_is_wrong(
    make_client: MakeClient, model_repo: Path, case_id: str, expected: str
) -> None:
    path, body, status, _ = BAD_BODIES[case_id]
    async with make_client(max_request_rows=10) as client:
        r = await client.post(path, content=body, headers=headers_of(case_id))
    assert r.status_code == status
    assert expected.format(*feature_names(model_repo)) in r.json()["detail"]


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
