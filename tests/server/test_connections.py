"""Connection hygiene on a real server process, over raw loopback sockets: read timeouts, the
keep-alive timeout, the connection cap, and the early 413 (``server.connections``).

Timeouts are set short (1 s) so each test ends in seconds; every socket read has a 10 s timeout,
so a server that never answers fails the test instead of hanging it. Nothing here measures time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.raw_http import closed_by_server, connect, read_response, request
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

LIMIT = 64 * 1024


def _body(model_repo: Path, rows: int = 1) -> bytes:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        return json.dumps({"instances": data["X"][:rows].tolist()}).encode()


@pytest.fixture(scope="module")
def short(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with 1 s header, body and keep-alive timeouts and a 64 KB body limit."""
    log = tmp_path_factory.mktemp("short") / "serve.log"
    env = {
        "TABSERVE_HEADER_TIMEOUT_S": "1",
        "TABSERVE_BODY_TIMEOUT_S": "1",
        "TABSERVE_KEEP_ALIVE_TIMEOUT_S": "1",
        "TABSERVE_MAX_BODY_BYTES": str(LIMIT),
    }
    with ServerProcess(model_repo, env=env, log_path=log) as server:
        yield server


def _metric(server: ServerProcess, line_start: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def test_half_sent_request_lines_get_408_and_are_closed(short: ServerProcess) -> None:
    socks = [connect(short.port) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"POST /v1/mod")
        for sock in socks:
            response = read_response(sock)
            assert response is not None, "closed without an answer"
            assert response.status == 408
            assert response.headers["connection"] == "close"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:tabserve:problem:request-timeout"
            assert closed_by_server(sock)
    finally:
        for sock in socks:
            sock.close()
    assert _metric(short, 'tabserve_connections_closed_total{reason="header_timeout"}') >= 50


def test_a_connection_that_sends_nothing_is_closed(short: ServerProcess) -> None:
    with connect(short.port) as sock:
        assert closed_by_server(sock)


def test_content_length_over_the_limit_is_refused_before_the_body(short: ServerProcess) -> None:
    with connect(short.port) as sock:
        sock.sendall(
            request(
                "POST",
                "/v1/models/xgb_small/predict",
                b"{}",
                {"Content-Length": "10000000000"},
            )
        )
        response = read_response(sock)
        assert response is not None
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert response.json()["status"] == 413
        assert closed_by_server(sock)


def test_a_chunked_upload_over_the_limit_gets_413_and_the_connection_closes(
    short: ServerProcess,
) -> None:
    sock = connect(short.port)
    chunk = b"[" * 16384
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    stop = threading.Event()

    def upload() -> None:
        # Up to 200 MB, as in the issue; the server must close long before.
        nonlocal sent
        try:
            while sent < 200 * 1024 * 1024 and not stop.is_set():
                sock.sendall(framed)
                sent += len(chunk)
        except OSError:
            pass

    try:
        sock.sendall(
            request(
                "POST", "/v1/models/xgb_small/predict", headers={"Transfer-Encoding": "chunked"}
            )
        )
        sender = threading.Thread(target=upload)
        sender.start()
        response = read_response(sock)
        assert response is not None
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert closed_by_server(sock)
        stop.set()
        sender.join(timeout=30)
        assert not sender.is_alive()
        assert sent < 100 * 1024 * 1024  # the server stopped reading: the upload broke off
    finally:
        stop.set()
        sock.close()


def test_a_stalled_body_gets_408(short: ServerProcess) -> None:
    with connect(short.port) as sock:
        sock.sendall(
            request("POST", "/v1/models/xgb_small/predict", b"{", {"Content-Length": "100"})
        )
        response = read_response(sock)
        assert response is not None
        assert response.status == 408
        assert response.headers["connection"] == "close"
        assert closed_by_server(sock)
    assert _metric(short, 'tabserve_connections_closed_total{reason="body_timeout"}') >= 1


def test_an_idle_keep_alive_connection_is_closed(short: ServerProcess, model_repo: Path) -> None:
    with connect(short.port) as sock:
        sock.sendall(request("POST", "/v1/models/xgb_small/predict", _body(model_repo)))
        response = read_response(sock)
        assert response is not None and response.status == 200
        assert "connection" not in response.headers  # kept alive ...
        assert closed_by_server(sock)  # ... until the keep-alive timeout


def test_a_body_sent_in_pieces_keeps_the_connection_alive(
    short: ServerProcess, model_repo: Path
) -> None:
    body = _body(model_repo, rows=20)
    with connect(short.port) as sock:
        for _ in range(2):
            raw = request("POST", "/v1/models/xgb_small/predict", body)
            sock.sendall(raw[: len(raw) - 100])
            time.sleep(0.05)  # two reads on the server's side
            sock.sendall(raw[len(raw) - 100 :])
            response = read_response(sock)
            assert response is not None and response.status == 200
            assert "connection" not in response.headers
            assert len(response.json()["predictions"]) == 20


def test_connections_past_the_cap_are_refused_with_503(model_repo: Path, tmp_path: Path) -> None:
    env = {"TABSERVE_MAX_CONNECTIONS": "8", "TABSERVE_KEEP_ALIVE_TIMEOUT_S": "60"}
    log = tmp_path / "serve.log"
    with ServerProcess(model_repo, env=env, log_path=log) as server:
        held: list[socket.socket] = []
        try:
            for _ in range(8):  # served, then held open (idle keep-alive)
                sock = connect(server.port)
                held.append(sock)
                sock.sendall(request("GET", "/health/live"))
                response = read_response(sock)
                assert response is not None and response.status == 200
            for _ in range(20):
                with connect(server.port) as extra:
                    extra.sendall(request("GET", "/health/live"))
                    response = read_response(extra)
                    assert response is not None
                    assert response.status == 503
                    assert response.json()["type"] == "urn:tabserve:problem:too-many-connections"
                    assert response.headers["retry-after"] == "1"
                    assert closed_by_server(extra)
            # the held connections still work
            held[0].sendall(request("GET", "/health/live"))
            response = read_response(held[0])
            assert response is not None and response.status == 200
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/health/live", timeout=10).status_code != 200:
            assert time.monotonic() < deadline  # the server notices the closed ones
            time.sleep(0.1)
        assert _metric(server, "tabserve_connections_refused_total") == 20
    lines = [line for line in log.read_text().splitlines() if "event=connection_refused" in line]
    assert 1 <= len(lines) < 20  # logged, at most once per 10 s
