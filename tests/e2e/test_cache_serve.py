"""End to end: the response cache in a real `tabserve serve` process, with a real Redis process.

Hits and misses are read from ``GET /metrics`` (``tabserve_cache_hits_total{model,tier}``);
with several workers each process has its own counters, and a scrape reaches one of them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.cache.keys import model_prefix, row_digests
from tests.support.redis_server import RedisProcess
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

TOKEN = "cache-e2e"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_ENV = {"TABSERVE_ADMIN_TOKEN": TOKEN}
# The test models are cheaper than a cache miss, so the server would not cache them by itself;
# a TTL set per model overrides that rule.
CACHED = {"TABSERVE_CACHE_MODEL_TTL_S": '{"xgb_small": 300, "logreg": 300}'}
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
REDIS_TIMEOUT_MS = 20
"""The Redis timeout of the servers started with Redis here."""


def holdout(model_repo: Path, n: int, name: str = "xgb_small") -> np.ndarray:
    with np.load(model_repo / name / "1" / "holdout.npz") as data:
        rows: np.ndarray = data["X"][:n].astype(np.float32)
    return rows


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(3))
    return total


def redis_entries(redis: RedisProcess, model: str) -> int:
    """How many cached rows of ``model`` Redis holds (keys under ``model_prefix``)."""
    reply = redis.command("KEYS", model_prefix(model).decode() + "*")  # "*<n>\r\n" then the keys
    return int(reply[1 : reply.index(b"\r\n")])


def hits(client: httpx.Client, model: str, tier: str) -> float:
    text = client.get("/metrics").text
    return metric(text, "tabserve_cache_hits_total", model=model, tier=tier)


def in_process_hits(client: httpx.Client, model: str) -> float:
    """Rows answered in this process: by the response memo (a repeated body) or the row cache."""
    return hits(client, model, "response") + hits(client, model, "memory")


def predict(client: httpx.Client, model: str, rows: np.ndarray, **headers: str) -> httpx.Response:
    response = client.post(
        f"/v1/models/{model}/predict", json={"instances": rows.tolist()}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


def scores(response: httpx.Response) -> list[list[float]]:
    return [p["scores"] for p in response.json()["predictions"]]


@pytest.fixture
def memory_server(model_repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(
        model_repo, env={**CACHED, **ADMIN_ENV}, log_path=tmp_path / "serve.log"
    ) as server:
        yield server


def test_repeat_hit_cache_control_model_view_and_flush(
    memory_server: ServerProcess, model_repo: Path
) -> None:
    rows = holdout(model_repo, 30)
    with httpx.Client(base_url=memory_server.url, timeout=10) as client:
        first = predict(client, "xgb_small", rows[:10])
        assert in_process_hits(client, "xgb_small") == 0
        again = predict(client, "xgb_small", rows[:10])
        assert in_process_hits(client, "xgb_small") == 10
        assert scores(again) == scores(first)

        # no-cache: computed fresh (no hit counted), same answer, entry refreshed.
        fresh = predict(client, "xgb_small", rows[:10], **{"Cache-Control": "no-cache"})
        assert scores(fresh) == scores(first)
        assert in_process_hits(client, "xgb_small") == 10
        # no-store: neither read nor written, so the next default request misses.
        predict(client, "xgb_small", rows[10:20], **{"Cache-Control": "no-store"})
        predict(client, "xgb_small", rows[10:20])
        assert in_process_hits(client, "xgb_small") == 10
        predict(client, "xgb_small", rows[10:20])
        assert in_process_hits(client, "xgb_small") == 20

        detail = client.get("/v1/models/xgb_small").json()["detail"][-1]["cache"]
        assert detail["enabled"] is True
        assert detail["tiers"] == ["response", "memory"]
        assert detail["redis"] == "off"
        assert detail["ttl_s"] == 300.0
        assert detail["hit_ratio"] == pytest.approx(20 / 40)  # no-cache, no-store: no lookup

        # Flush one model: its entries miss, the other model's still hit.
        predict(client, "logreg", rows[:5])
        predict(client, "logreg", rows[:5])
        assert in_process_hits(client, "logreg") == 5
        flushed = client.post("/admin/models/xgb_small/cache/flush", headers=ADMIN)
        assert flushed.status_code == 200, flushed.text
        assert flushed.json()["model"] == "xgb_small"
        after = predict(client, "xgb_small", rows[:10])
        assert scores(after) == scores(first)
        assert in_process_hits(client, "xgb_small") == 20
        predict(client, "logreg", rows[:5])
        assert in_process_hits(client, "logreg") == 10

        unknown = client.post("/admin/models/nope/cache/flush", headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert client.post("/admin/models/xgb_small/cache/flush").status_code == 401


def test_a_new_version_is_not_answered_from_the_old_ones_entries(
    model_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    rows = holdout(model_repo, 10)
    with (
        ServerProcess(repo, env={**CACHED, **ADMIN_ENV}, log_path=tmp_path / "s.log") as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        v1 = predict(client, "xgb_small", rows)
        predict(client, "xgb_small", rows)
        assert in_process_hits(client, "xgb_small") == 10
        logreg = scores(predict(client, "logreg", rows))
        # Publish xgb_small/2: a different model (the logreg ONNX file) under the same name.
        v2_dir = repo / "xgb_small" / "2"
        shutil.copytree(repo / "logreg" / "1", v2_dir)
        card = json.loads((v2_dir / "model.json").read_text())
        card.update(name="xgb_small", version=2)
        (v2_dir / "model.json").write_text(json.dumps(card))
        reload = client.post("/admin/reload", headers=ADMIN)
        assert reload.status_code == 200, reload.text
        assert "xgb_small/2" in reload.json()["loaded"]

        v2 = predict(client, "xgb_small", rows)
        assert v2.json()["version"] == 2
        assert in_process_hits(client, "xgb_small") == 10  # no stale hit
        assert scores(v2) == logreg
        assert scores(v2) != scores(v1)
        assert scores(predict(client, "xgb_small", rows)) == logreg
        assert in_process_hits(client, "xgb_small") == 20


def redis_server_process(
    model_repo: Path, tmp_path: Path, redis: RedisProcess, *extra: str, **env: str
) -> ServerProcess:
    return ServerProcess(
        model_repo,
        args=["--redis-url", redis.url, *extra],
        env={
            **ADMIN_ENV,
            "TABSERVE_CACHE_REDIS_AUTO_SKIP": "false",  # the test models are cheaper than a trip
            "TABSERVE_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
            "TABSERVE_REDIS_BREAKER_BACKOFF_S": "0.5",
            **CACHED,
            **env,
        },
        log_path=tmp_path / "serve.log",
    )


async def test_redis_killed_mid_load_fails_no_request_and_hits_resume(
    model_repo: Path, tmp_path: Path, redis_process: RedisProcess
) -> None:
    rows = holdout(model_repo, 200)
    # Redis only (no in-process tier), so every hit is a Redis hit.
    server = redis_server_process(
        model_repo, tmp_path, redis_process, TABSERVE_CACHE_MEMORY_ENTRIES="0"
    )
    with server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            in_flight = asyncio.Semaphore(32)

            async def one(i: int) -> int:
                row = rows[i % len(rows) : i % len(rows) + 1]
                async with in_flight:
                    r = await client.post(
                        "/v1/models/xgb_small/predict", json={"instances": row.tolist()}
                    )
                return r.status_code

            load = asyncio.gather(*(one(i) for i in range(1_500)))
            await asyncio.sleep(0.5)
            assert not load.done()
            redis_process.kill()  # while requests are in flight
            statuses = await load
            assert set(statuses) == {200}

            async def redis_hits() -> float:
                text = (await client.get("/metrics")).text
                return metric(text, "tabserve_cache_hits_total", model="xgb_small", tier="redis")

            redis_process.start()  # same port, empty
            before = await redis_hits()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and await redis_hits() == before:
                r = await client.post(
                    "/v1/models/xgb_small/predict", json={"instances": rows[:3].tolist()}
                )
                assert r.status_code == 200
                await asyncio.sleep(0.2)
            assert await redis_hits() > before
            text = (await client.get("/metrics")).text
            failed = sum(
                metric(text, f"tabserve_cache_{kind}_total", tier="redis")
                for kind in ("errors", "timeouts", "skipped")
            )
            assert failed > 0  # the outage was seen and counted


async def test_a_paused_redis_costs_at_most_its_timeout(
    model_repo: Path, tmp_path: Path, redis_process: RedisProcess
) -> None:
    rows = holdout(model_repo, 100)
    with redis_server_process(model_repo, tmp_path, redis_process) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            first = await client.post(
                "/v1/models/xgb_small/predict", json={"instances": rows[:1].tolist()}
            )
            assert first.status_code == 200
            redis_process.pause()
            try:

                async def timed(i: int) -> tuple[int, float]:
                    started = time.perf_counter()
                    r = await client.post(
                        "/v1/models/xgb_small/predict",
                        json={"instances": rows[i : i + 1].tolist()},
                    )
                    return r.status_code, time.perf_counter() - started

                results = [await timed(i) for i in range(1, 21)]  # one at a time
                results += await asyncio.gather(*(timed(i) for i in range(21, 100)))
            finally:
                redis_process.resume()
            assert {status for status, _ in results} == {200}
            # A hang detector, not a measurement: a request waiting on the paused Redis would
            # wait until the resume (after the last request) and take the client's 10 s timeout.
            # 250x the Redis timeout (5 s) leaves room for queueing behind ~80 concurrent
            # requests on a loaded two-core machine.
            assert max(seconds for _, seconds in results) < 250 * REDIS_TIMEOUT_MS / 1000
            text = (await client.get("/metrics")).text
            assert metric(text, "tabserve_cache_timeouts_total") > 0


def test_two_workers_share_entries_through_redis(
    model_repo: Path, tmp_path: Path, redis_process: RedisProcess
) -> None:
    """Every row is sent twice, each time on a new connection. A second send that lands on the
    worker that computed the row hits its memory; one that lands on the other worker can only
    hit Redis. So a Redis-tier hit anywhere is a row computed by one worker, served by the other.
    """
    rows = holdout(model_repo, 120)
    with redis_server_process(model_repo, tmp_path, redis_process, "--workers", "2") as server:

        def send_each_row_on_its_own_connection() -> None:
            for i in range(len(rows)):
                with httpx.Client(base_url=server.url, timeout=10) as c:
                    predict(c, "xgb_small", rows[i : i + 1])

        send_each_row_on_its_own_connection()
        # The Redis writes run in the background after each answer: wait until Redis holds an
        # entry for every distinct row.
        entries = len(set(row_digests(rows)))
        deadline = time.monotonic() + 30.0
        while redis_entries(redis_process, "xgb_small") < entries:
            assert time.monotonic() < deadline, "the first pass's Redis writes did not all land"
            time.sleep(0.02)
        send_each_row_on_its_own_connection()
        per_worker: set[tuple[float, float]] = set()
        for _ in range(30):
            with httpx.Client(base_url=server.url, timeout=10) as c:
                text = c.get("/metrics").text
            memory = metric(text, "tabserve_cache_hits_total", model="xgb_small", tier="memory")
            redis = metric(text, "tabserve_cache_hits_total", model="xgb_small", tier="redis")
            per_worker.add((memory, redis))
        assert any(redis > 0 for _, redis in per_worker), per_worker
