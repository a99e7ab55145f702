"""The benchmark against a real server: its built-in load generator (used where wrk is missing),
and the typed-columns cell, bounded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from loadtests.bench.serving import _python_load, request_bytes
from loadtests.bench.typed import FORMS, NUMERIC, TYPED, run_typed
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


def test_typed_columns_cell_measures_both_models() -> None:
    """The bench's typed-columns cell, bounded: both models built, every form answered 200."""
    args = argparse.Namespace(concurrency="1", env=[], repeat=1, seconds=0.3)
    report = run_typed(args, None, None, "python")
    assert report["refused"] == {}
    cells = {(c["model"], c["kind"]): c for c in report["cells"]}
    assert set(cells) == {(m, f"typed-{f}") for m in (TYPED, NUMERIC) for f in FORMS}
    for cell in cells.values():
        assert cell["errors"] == 0 and cell["requests"] > 0
        assert cell["cpu_us_per_request"] is not None and cell["cpu_us_per_request"] > 0
    assert set(report["ort_us_batch1"]) == {TYPED, NUMERIC}
    headline = [k for k in report["ratios"] if "headline" in k]
    assert len(headline) == 1 and report["ratios"][headline[0]] > 0
