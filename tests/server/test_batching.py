"""Micro-batching: concurrent requests coalesce, and each caller gets exactly its own rows."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest

from tests.server.conftest import MakeClient, core_of


async def fire(client: Any, path: str, chunks: list[np.ndarray]) -> list[Any]:
    return await asyncio.gather(
        *(
            client.post(path, json={"instances": c.tolist()}, headers={"X-Request-ID": f"r{i}"})
            for i, c in enumerate(chunks)
        )
    )


@pytest.mark.parametrize("mode", ["inline", "thread"])
async def test_concurrent_requests_coalesce_and_get_their_own_rows(
    make_client: MakeClient, holdout: np.ndarray, reference: Any, mode: str
) -> None:
    # 60 requests of 1 to 5 rows, all different; thread mode forces the ORT worker thread.
    sizes = [1 + i % 5 for i in range(60)]
    bounds = np.cumsum([0, *sizes])
    chunks = [holdout[a:b] for a, b in itertools.pairwise(bounds)]
    expected = reference("xgb_small").scores(holdout[: bounds[-1]])
    inline_max = 1e9 if mode == "inline" else 0.0
    async with make_client(inline_max_cost_us=inline_max, max_batch_rows=32) as client:
        model = core_of(client).registry.get("xgb_small")
        assert model.runner.inline is (mode == "inline")
        responses = await fire(client, "/v1/models/xgb_small/predict", chunks)
        stats = model.batcher.stats
    for i, (r, a, b) in enumerate(zip(responses, bounds[:-1], bounds[1:], strict=True)):
        assert r.status_code == 200
        body = r.json()
        assert body["request_id"] == f"r{i}"
        got = np.array([p["scores"] for p in body["predictions"]], dtype=np.float32)
        np.testing.assert_allclose(got, expected[a:b], rtol=0, atol=1e-6)
    assert stats.rows == bounds[-1]
    assert stats.largest_batch_rows > 1
    assert stats.coalesced_batches >= 1
    assert stats.batches < len(chunks)
    assert stats.largest_batch_rows <= 32


async def test_batch_size_is_visible_in_metrics(
    make_client: MakeClient, holdout: np.ndarray
) -> None:
    chunks = [holdout[i : i + 1] for i in range(40)]
    async with make_client() as client:
        await fire(client, "/v1/models/logreg/predict", chunks)
        text = (await client.get("/metrics")).text
    count = sum_ = 0.0
    for line in text.splitlines():
        if line.startswith('tabserve_batch_rows_count{model="logreg"'):
            count = float(line.split()[-1])
        if line.startswith('tabserve_batch_rows_sum{model="logreg"'):
            sum_ = float(line.split()[-1])
    assert sum_ == 40
    assert count < 40  # fewer batches than requests: rows were coalesced


async def test_large_request_is_split_and_reassembled_in_order(
    make_client: MakeClient, holdout: np.ndarray, reference: Any
) -> None:
    rows = holdout[:250]
    async with make_client(max_batch_rows=16) as client:
        r = await client.post("/v1/models/xgb_small/predict", json={"instances": rows.tolist()})
        stats = core_of(client).registry.get("xgb_small").batcher.stats
    got = np.array([p["scores"] for p in r.json()["predictions"]], dtype=np.float32)
    np.testing.assert_allclose(got, reference("xgb_small").scores(rows), rtol=0, atol=1e-6)
    assert stats.batches == 16  # ceil(250 / 16)
    assert stats.largest_batch_rows == 16


async def test_batching_off_runs_each_request_alone(
    make_client: MakeClient, holdout: np.ndarray, reference: Any
) -> None:
    chunks = [holdout[i : i + 2] for i in range(0, 40, 2)]
    async with make_client(batching=False) as client:
        responses = await fire(client, "/v1/models/xgb_small/predict", chunks)
        stats = core_of(client).registry.get("xgb_small").batcher.stats
    expected = reference("xgb_small").scores(holdout[:40])
    got = np.concatenate(
        [
            np.array([p["scores"] for p in r.json()["predictions"]], dtype=np.float32)
            for r in responses
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert stats.batches == 20
    assert stats.coalesced_batches == 0
    assert stats.largest_batch_rows == 2


async def test_max_delay_fills_batches(make_client: MakeClient, holdout: np.ndarray) -> None:
    async with make_client(max_delay_ms=20.0, max_batch_rows=64) as client:
        responses = await fire(
            client, "/v1/models/logreg/predict", [holdout[i : i + 1] for i in range(30)]
        )
        stats = core_of(client).registry.get("logreg").batcher.stats
    assert all(r.status_code == 200 for r in responses)
    assert stats.rows == 30
    assert stats.coalesced_batches >= 1
