"""The benchmark's built-in load generator (used where wrk is missing) against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtests.bench.serving import _python_load, request_bytes
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e


async def test_python_load_generator_drives_a_real_server(model_repo: Path, tmp_path: Path) -> None:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:8].astype(np.float32)
    server = ServerProcess(model_repo, log_path=tmp_path / "serve.log")
    server.start()
    try:
        requests = [
            request_bytes(
                "/v1/models/xgb_small/predict",
                json.dumps({"instances": [row]}).encode(),
                server.port,
            )
            for row in rows.tolist()
        ]
        result = await _python_load(server.port, requests, concurrency=4, seconds=0.3)
    finally:
        server.stop()
    assert result["errors"] == 0
    assert len(result["latencies_ns"]) > 10
    assert min(result["latencies_ns"]) > 0
