"""A real ``tabserve serve`` with its gRPC port, once per test module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.server_process import ServerProcess


class Running:
    def __init__(self, server: ServerProcess, grpc_port: int) -> None:
        self.server = server
        self.url = server.url
        self.grpc_url = f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def running(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The session's test repository served over HTTP and gRPC (stopped by its PID)."""
    grpc_port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = ServerProcess(model_repo, env={"TABSERVE_GRPC_PORT": str(grpc_port)}, log_path=log)
    server.start()
    try:
        yield Running(server, grpc_port)
    finally:
        server.stop()
