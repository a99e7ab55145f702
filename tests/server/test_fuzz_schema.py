"""Schema-driven fuzzing of a real server (``loadtests.stress.fuzz``, Schemathesis): every answer
to valid and invalid requests is documented by the OpenAPI document, with its media type, headers
and body schema, and none is a 5xx. Plus the answers the fuzzer found outside the document:
a GET with a declared body over the limit (413), a feedback body that is not JSON (415), and an
HTTP request the parser refuses (400, problem+json like every other error).

Schemathesis runs in a subprocess of its own (``python -m schemathesis.cli``), so its and
Hypothesis's warnings never reach this process's ``filterwarnings = error``. The run is bounded by
its examples (a few per operation) and by a hard timeout; nothing here measures time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.stress.fuzz import DOCUMENTED_CHECK, FuzzSummary, format_summary, fuzz
from tests.support.raw_http import connect, read_response
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

LIMIT = 64 * 1024


def _assert_clean(summary: FuzzSummary) -> None:
    report = format_summary(summary)
    assert summary.finished, report
    assert summary.requests > 300, report  # every operation got its share
    assert len(summary.operations) >= 15, report
    assert summary.server_errors == 0, report
    assert not summary.errors, report
    assert not summary.failures, report


def test_fuzzing_from_the_schema_finds_no_undocumented_answer(
    model_repo: Path, tmp_path: Path
) -> None:
    summary = fuzz(model_repo, examples=4, seed=11, timeout=120, work_dir=tmp_path, quiet=True)
    _assert_clean(summary)
    assert {400, 415} <= set(summary.statuses), format_summary(summary)  # invalid data was sent


def test_the_fuzzer_reports_an_answer_the_schema_does_not_list(
    model_repo: Path, tmp_path: Path
) -> None:
    # The document without 415 on the predict operations: their Content-Type probes are refused
    # with 415, which the fuzzer must report (Schemathesis alone checks those probes for 5xx only).
    with ServerProcess(model_repo, env={"TABSERVE_ADMIN_TOKEN": "t0ken"}) as server:
        schema: dict[str, Any] = httpx.get(server.url + "/schema/openapi.json", timeout=10).json()
    for template, item in schema["paths"].items():
        if template.endswith("/predict"):
            del item["post"]["responses"]["415"]
    edited = tmp_path / "openapi.json"
    edited.write_text(json.dumps(schema))
    summary = fuzz(
        model_repo,
        examples=1,
        seed=11,
        phases=("coverage",),
        timeout=120,
        schema=edited,
        work_dir=tmp_path / "run",
        quiet=True,
    )
    failing = {operation for check, operation in summary.failures if check == DOCUMENTED_CHECK}
    assert failing == {
        "POST /v1/models/{name}/predict",
        "POST /v1/models/{name}/versions/{version}/predict",
    }, format_summary(summary)
    assert all("415" in sample.message for sample in summary.samples), format_summary(summary)


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    env = {"TABSERVE_ADMIN_TOKEN": "t0ken", "TABSERVE_MAX_BODY_BYTES": str(LIMIT)}
    with ServerProcess(model_repo, env=env, log_path=log) as server:
        yield server


def _documented(server: ServerProcess, method: str, template: str) -> dict[str, Any]:
    schema = httpx.get(server.url + "/schema/openapi.json", timeout=10).json()
    responses: dict[str, Any] = schema["paths"][template][method]["responses"]
    return responses


def test_a_get_with_a_declared_body_over_the_limit_gets_a_documented_413(
    server: ServerProcess,
) -> None:
    sock = connect(server.port)
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        answer = read_response(sock)
    finally:
        sock.close()
    assert answer is not None
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert "413" in _documented(server, "get", "/v1/models")


def test_feedback_that_is_not_json_gets_a_documented_415(server: ServerProcess) -> None:
    answer = httpx.post(
        server.url + "/v1/models/logreg/feedback",
        content=b'{"label": 1, "row_hash": "00"}',
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert answer.status_code == 415, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    documented = _documented(server, "post", "/v1/models/{name}/feedback")
    assert list(documented["415"]["content"]) == ["application/problem+json"]
    assert "application/json" in documented["200"]["content"]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Probe: a\x00b\r\n\r\n",  # NUL in a header
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /v1/models/logreg/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{}",
    ],
    ids=["nul-in-header", "unknown-transfer-coding", "two-content-lengths"],
)
def test_a_request_the_http_parser_refuses_gets_a_problem_json_400(
    server: ServerProcess, raw: bytes
) -> None:
    sock = connect(server.port)
    try:
        sock.sendall(raw)
        answer = read_response(sock)
    finally:
        sock.close()
    assert answer is not None
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    problem = answer.json()
    assert problem["type"] == "urn:tabserve:problem:bad-request"
    assert problem["status"] == 400
    assert problem["request_id"] == answer.headers["x-request-id"]
    assert httpx.get(server.url + "/health/live", timeout=10).status_code == 200
