"""The benchmark's gRPC load generator against a real server (``tabserve bench``'s gRPC cells)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtests.bench.grpc_load import (
    FLOOR,
    FLOOR_REQUESTS,
    INFER,
    GrpcLoad,
    one_row_requests,
    read_requests,
    write_requests,
)
from tests.support.ports import free_port
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e


def test_requests_file_round_trips(tmp_path: Path) -> None:
    requests = [b"", b"\n\x00abc", b"x" * 300]
    write_requests(tmp_path / "r.bin", requests)
    assert read_requests(tmp_path / "r.bin") == requests


def test_grpc_load_generator_drives_a_real_server(model_repo: Path, tmp_path: Path) -> None:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:8].astype(np.float32)
    grpc_port = free_port()
    server = ServerProcess(
        model_repo, env={"TABSERVE_GRPC_PORT": str(grpc_port)}, log_path=tmp_path / "serve.log"
    )
    server.start()
    try:
        load = GrpcLoad(grpc_port, None, tmp_path)
        infer = load.run(server.port, INFER, one_row_requests("xgb_small", "input", rows), 4, 0.3)
        floor = load.run(server.port, FLOOR, FLOOR_REQUESTS, 4, 0.3)
        wrong = load.run(server.port, INFER, one_row_requests("xgb_small", "x", rows), 2, 0.2)
    finally:
        server.stop()
    for result in (infer, floor):
        assert result["errors"] == 0 and result["requests"] > 10
        assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert wrong["errors"] == wrong["requests"] > 0  # refused calls count as errors
