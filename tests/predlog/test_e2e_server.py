"""End to end: a real ``tabserve serve`` process with the prediction log on, over HTTP.

Predictions answer as without the log (the model's own scores), and every served row lands on
disk with its request id, its index in the request, the answer and the row itself. The session's
``model_repo`` (``xgb_small``, built by the real export pipeline) is served; 100-row requests are
split across batches (``max_batch_rows`` 16), single-row ones are coalesced.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.modelcard import load_card
from server.runner import Runner
from tests.predlog.conftest import read
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

MODEL = "xgb_small"
SINGLES = 40
LARGE = 100


async def test_served_rows_land_on_disk(model_repo: Path, tmp_path: Path) -> None:
    vdir = model_repo / MODEL / "1"
    card = load_card(vdir)
    with np.load(vdir / "holdout.npz") as data:
        X = data["X"][: SINGLES + 2 * LARGE].astype(np.float32)
    expected = Runner(vdir / card.onnx.file, card).run(X)[:, card.positive_index]
    log_dir = tmp_path / "predlog"
    env = {
        "TABSERVE_PREDICTION_LOG_DIR": str(log_dir),
        "TABSERVE_PREDICTION_LOG_RATE": "1",
        "TABSERVE_PREDICTION_LOG_FILE_S": "0.5",
        "TABSERVE_CACHE": "false",
    }
    requests = [(f"s-{i}", i, i + 1) for i in range(SINGLES)] + [
        (f"big-{j}", SINGLES + j * LARGE, SINGLES + (j + 1) * LARGE) for j in range(2)
    ]
    with ServerProcess(model_repo, env=env, log_path=tmp_path / "serve.log") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def post(request_id: str, start: int, stop: int) -> list[float]:
                r = await client.post(
                    f"/v1/models/{MODEL}/predict",
                    json={"instances": X[start:stop].tolist()},
                    headers={"X-Request-ID": request_id},
                )
                assert r.status_code == 200, r.text
                return [p["scores"][card.positive_index] for p in r.json()["predictions"]]

            answers = await asyncio.gather(*(post(*req) for req in requests))
            served = np.array([a for part in answers for a in part], dtype=np.float32)
            np.testing.assert_allclose(served, expected, rtol=1e-6)  # as without the log

            # Both observers saw every row: the monitor's window and the log (files closed
            # every half second while serving).
            snapshot = (await client.get(f"/v1/models/{MODEL}/monitoring")).json()
            assert snapshot["observed"]["rows_total"] == len(X)
            written = f'tabserve_prediction_log_rows_total{{model="{MODEL}"}} {float(len(X))}'
            deadline = time.monotonic() + 10
            while written not in (await client.get("/metrics")).text:
                assert time.monotonic() < deadline, "rows not written"
                await asyncio.sleep(0.05)

    table = read(log_dir, model=MODEL)
    assert table.num_rows == len(X)
    assert set(table["version"].to_pylist()) == {1}
    first = {request_id: start for request_id, start, _ in requests}
    got = table.to_pydict()
    index = np.array([first[r] + row for r, row in zip(got["request_id"], got["row"], strict=True)])
    assert sorted(index.tolist()) == list(range(len(X)))  # each served row once
    features = np.column_stack([table[n].to_numpy() for n in card.input.feature_names])
    np.testing.assert_array_equal(features, X[index])
    np.testing.assert_array_equal(table["answer"].to_numpy(), served[index])
