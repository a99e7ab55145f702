"""Shutdown of a real server process (SIGTERM): queued work is answered within the drain timeout
or refused with 503 problem+json, never a 500 or silence; requests on keep-alive connections that
were open at SIGTERM are answered 503 with ``Connection: close``.

Bounded: the drain timeout is 1-5 s, every read has a timeout, and the process must exit on its
own (SIGTERM) well before the test's own limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.raw_http import closed_by_server, connect, read_response, request
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

BAD_LOG = ("Traceback", "CancelledError", "Exception in ASGI application", "level=error")


def _rows(model_repo: Path) -> np.ndarray:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows: np.ndarray = data["X"].astype(np.float32)
    return rows


def _exit_code(server: ServerProcess) -> int:
    assert server.proc is not None
    code = server.proc.wait(timeout=60)  # exits on its own, after its drain
    server.stop()
    return code


async def _connections_open(client: httpx.AsyncClient, n: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("tabserve_connections_open "))
        if float(line.split()[1]) >= n:
            return
        assert time.monotonic() < deadline, line
        await asyncio.sleep(0.05)


def _wait_until_not_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_queued_work_outlasting_the_drain_is_answered_503_never_500(
    model_repo: Path, tmp_path: Path
) -> None:
    # One-row batches of 40 requests x 3,000 rows: seconds of queued work against a 1 s drain.
    env = {
        "TABSERVE_DRAIN_TIMEOUT_S": "1",
        "TABSERVE_MAX_BATCH_ROWS": "1",
        "TABSERVE_MAX_QUEUE_ROWS": "1000000",
        "TABSERVE_DEFAULT_DEADLINE_MS": "600000",
        "TABSERVE_CACHE": "false",
    }
    log = tmp_path / "serve.log"
    server = ServerProcess(model_repo, env=env, log_path=log)
    server.start()
    rows = _rows(model_repo)
    bodies = [
        json.dumps({"instances": np.roll(rows, i, axis=0)[:3000].tolist()}).encode()
        for i in range(40)
    ]

    async def run() -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            sent = [
                asyncio.ensure_future(client.post("/v1/models/xgb_small/predict", content=body))
                for body in bodies
            ]
            await _connections_open(client, 41)  # the 40 and this one
            assert server.pid is not None
            os.kill(server.pid, signal.SIGTERM)
            return await asyncio.gather(*sent, return_exceptions=True)

    try:
        answers = asyncio.run(run())
        code = _exit_code(server)
    finally:
        server.stop()
    statuses = []
    for answer in answers:
        assert isinstance(answer, httpx.Response), f"no answer: {answer!r}"
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            assert answer.status_code == 503
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["type"] == "urn:tabserve:problem:shutting-down"
    assert 503 in statuses, "the queued work finished within the drain: the test proves nothing"
    assert code == -signal.SIGTERM
    text = log.read_text()
    assert "event=shutdown_started" in text
    assert not [bad for bad in BAD_LOG if bad in text], text[-3000:]


def test_requests_on_keep_alive_connections_after_sigterm_get_503_and_close(
    model_repo: Path, tmp_path: Path
) -> None:
    env = {"TABSERVE_DRAIN_TIMEOUT_S": "5", "TABSERVE_KEEP_ALIVE_TIMEOUT_S": "5"}
    log = tmp_path / "serve.log"
    server = ServerProcess(model_repo, env=env, log_path=log)
    server.start()
    body = json.dumps({"instances": _rows(model_repo)[:1].tolist()}).encode()
    socks = []
    try:
        for _ in range(16):
            sock = connect(server.port)
            socks.append(sock)
            sock.sendall(request("POST", "/v1/models/xgb_small/predict", body))
            response = read_response(sock)
            assert response is not None and response.status == 200
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        _wait_until_not_listening(server.port)  # then every connection has been told
        for sock in socks:
            sock.sendall(request("POST", "/v1/models/xgb_small/predict", body))
        for sock in socks:
            response = read_response(sock)
            assert response is not None, "no answer on a keep-alive connection after SIGTERM"
            assert response.status == 503
            assert response.headers["connection"] == "close"
            assert response.headers["retry-after"] == "1"
            assert response.json()["type"] == "urn:tabserve:problem:shutting-down"
            assert closed_by_server(sock)
        code = _exit_code(server)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    assert code == -signal.SIGTERM
    text = log.read_text()
    assert not [bad for bad in BAD_LOG if bad in text], text[-3000:]
    assert "Application shutdown complete" in text


def test_idle_keep_alive_connections_do_not_hold_up_the_exit(
    model_repo: Path, tmp_path: Path
) -> None:
    env = {"TABSERVE_DRAIN_TIMEOUT_S": "2", "TABSERVE_KEEP_ALIVE_TIMEOUT_S": "60"}
    server = ServerProcess(model_repo, env=env, log_path=tmp_path / "serve.log")
    server.start()
    sock = connect(server.port, timeout=30)
    try:
        sock.sendall(request("GET", "/health/live"))
        response = read_response(sock)
        assert response is not None and response.status == 200
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        assert closed_by_server(sock)  # after at most the drain timeout, not the keep-alive one
        assert _exit_code(server) == -signal.SIGTERM
    finally:
        sock.close()
        server.stop()
