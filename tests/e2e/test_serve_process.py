"""End to end: a real `tabserve serve` process on a free port, driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e


async def test_real_server_serves_v1_v2_metrics_admin_and_stops(
    model_repo: Path, tmp_path: Path
) -> None:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:20].astype(np.float32)
    token_file = tmp_path / "admin-token"
    token_file.write_text("e2e-token\n")  # the flag strips the newline
    server = ServerProcess(
        model_repo, args=["--admin-token-file", str(token_file)], log_path=tmp_path / "serve.log"
    )
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            many = await asyncio.gather(
                *(
                    client.post(
                        "/v1/models/xgb_small/predict",
                        json={"instances": rows[i : i + 1].tolist()},
                        headers={"X-Request-ID": f"e2e-{i}"},
                    )
                    for i in range(20)
                )
            )
            v2 = await client.post(
                "/v2/models/logreg/versions/1/infer",
                json={
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [2, 24],
                            "datatype": "FP32",
                            "data": rows[:2].ravel().tolist(),
                        }
                    ]
                },
            )
            bad = await client.post("/v1/models/xgb_small/predict", content=b"{nope")
            reload = await client.post(
                "/admin/reload", headers={"Authorization": "Bearer e2e-token"}
            )
            metrics = await client.get("/metrics")
            schema = await client.get("/schema/openapi.json")
    finally:
        server.stop()
    for i, r in enumerate(many):
        assert r.status_code == 200
        assert r.headers["x-request-id"] == r.json()["request_id"] == f"e2e-{i}"
    assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [2, 2]
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert reload.status_code == 200
    # 20 predictions and the malformed one (counted once its model was resolved)
    assert 'tabserve_requests_total{model="xgb_small",version="1"} 21.0' in metrics.text
    assert schema.status_code == 200
    log = (tmp_path / "serve.log").read_text()
    assert "event=ready" in log
    assert "e2e-token" not in log  # the admin token is never logged
    assert "e2e-token" not in " ".join(server.command())  # nor on the command line (ps)
    assert "Application shutdown complete" in log


def test_a_busy_port_is_reported_in_one_line_before_the_models_load(
    model_repo: Path, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ServerProcess(model_repo, port=port, log_path=tmp_path / "serve.log")
        done = subprocess.run(
            server.command(),
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")},
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]
    assert "event=ready" not in done.stdout + done.stderr  # no model was loaded
