"""Which error answers are logged: expected overload/outage answers are counted, not logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from server import errors
from server.http_errors import EXCEPTION_HANDLERS

RAISED: dict[str, Exception] = {
    "overloaded": errors.Overloaded("queue full", retry_after=0.5),
    "deadline": errors.DeadlineExceeded("deadline passed"),
    "cache": errors.CacheUnavailable("redis down"),
    "invalid-model": errors.InvalidModelCard("bad card"),
    "bug": RuntimeError("boom"),
}


@get("/raise/{name:str}", sync_to_thread=False)
def _raise(request: Request[Any, Any, Any]) -> None:
    raise RAISED[request.path_params["name"]]


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # the tabserve loggers do not propagate to the root logger once the app configured them
    logger = logging.getLogger("tabserve.http")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.ERROR, logger="tabserve.http")
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.mark.parametrize(
    ("name", "status", "logged"),
    [
        ("overloaded", 503, False),
        ("deadline", 504, False),
        ("cache", 503, False),
        ("invalid-model", 500, True),
        ("bug", 500, True),
    ],
)
def test_only_unexpected_server_errors_are_logged(
    error_log: pytest.LogCaptureFixture, name: str, status: int, logged: bool
) -> None:
    app = Litestar([_raise], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    with TestClient(app) as client:
        r = client.get(f"/raise/{name}")
    assert r.status_code == status
    errors_logged = [rec for rec in error_log.records if rec.levelno >= logging.ERROR]
    assert bool(errors_logged) is logged


def test_every_problem_has_one_shape() -> None:
    """/v1, /v2, Litestar's own errors and unexpected ones: the same members, ``error`` =
    ``detail`` (the member Open Inference Protocol clients read)."""
    app = Litestar([_raise], exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    with TestClient(app) as client:
        answers = [
            client.get("/raise/overloaded"),
            client.get("/raise/bug"),
            client.get("/v2/no/such/route"),
            client.post("/raise/deadline"),  # 405
        ]
    for r in answers:
        problem = r.json()
        assert list(problem) == ["type", "title", "status", "detail", "request_id", "error"]
        assert problem["error"] == problem["detail"]
        assert problem["status"] == r.status_code
