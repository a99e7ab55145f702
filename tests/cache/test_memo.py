"""The response memo: repeated bodies answered before decoding, never wrongly, still monitored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.cache.batch import ModelScoreCache
from server.cache.memo import ENTRY_OVERHEAD, MAX_BODY_BYTES, ResponseMemo, payload_bytes
from tests.cache.test_extension import ADMIN, serving
from tests.support.redis_server import RedisProcess

ROWS = np.zeros((1, 3), dtype=np.float32)
SCORES = np.array([[0.25, 0.75]], dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def memo(
    capacity: int = 4, ttl_s: float = 10.0, max_bytes: int = 1 << 20
) -> tuple[ResponseMemo, Clock, list[int | None]]:
    clock, generation = Clock(), [7]
    m = ResponseMemo(capacity, max_bytes, ttl_s, lambda: generation[0], clock=clock)
    return m, clock, generation


def remember(m: ResponseMemo, route: int, body: bytes, answer: Any) -> None:
    """Answered twice: the doorkeeper admits a body on its second answer."""
    m.put(route, body, answer, m.token())
    m.put(route, body, answer, m.token())


def test_a_body_is_remembered_on_its_second_answer() -> None:
    m, _, _ = memo()
    m.put(1, b"once", (ROWS, None, SCORES), m.token())
    assert m.get(1, b"once") is None and len(m) == 0
    m.put(1, b"once", (ROWS, None, SCORES), m.token())
    assert m.get(1, b"once") is not None


def test_what_is_kept_is_made_only_when_an_entry_is_kept() -> None:
    m, _, _ = memo()
    made: list[int] = []

    def make() -> Any:
        made.append(1)
        return (ROWS, "encoded ahead", SCORES)

    m.put(1, b"body", make, m.token())  # first answer: only seen
    assert made == []
    m.put(1, b"body", make, m.token())
    assert made == [1]
    found = m.get(1, b"body")
    assert found is not None and found[1] == "encoded ahead"


def test_an_answer_computed_before_a_flush_is_not_remembered() -> None:
    m, _, generation = memo()
    remember(m, 1, b"a", (ROWS, None, SCORES))
    before = m.token()  # a request reads the token, then runs...
    generation[0] = 8  # ...while the model is flushed
    m.put(1, b"b", (ROWS, None, SCORES), before)
    m.put(1, b"b", (ROWS, None, SCORES), before)
    assert m.get(1, b"b") is None and m.get(1, b"a") is None and len(m) == 0


def test_bounded_by_bytes_of_bodies_rows_and_scores() -> None:
    rows = np.zeros((16, 24), dtype=np.float32)  # 1,536 bytes
    size = 99 + rows.nbytes + SCORES.nbytes + ENTRY_OVERHEAD  # 99-byte bodies
    m, _, _ = memo(capacity=100, max_bytes=3 * size)
    for i in range(5):
        remember(m, 1, b"%099d" % i, (rows, None, SCORES))
    assert len(m) == 3 and m.size_bytes == 3 * size
    assert m.get(1, b"%099d" % 0) is None and m.get(1, b"%099d" % 4) is not None
    huge = np.zeros((1000, 24), dtype=np.float32)
    remember(m, 1, b"big", (huge, None, SCORES))  # larger than the whole budget: skipped
    assert m.get(1, b"big") is None and len(m) == 3


def test_answers_the_exact_body_on_its_route_only() -> None:
    m, _, _ = memo()
    remember(m, 1, b'{"instances": [[1, 2, 3]]}', (ROWS, None, SCORES))
    found = m.get(1, b'{"instances": [[1, 2, 3]]}')
    assert found is not None and found[2] is SCORES
    assert m.get(2, b'{"instances": [[1, 2, 3]]}') is None  # the other route's decoder
    assert m.get(1, b'{"instances": [[1, 2, 3.0]]}') is None  # another spelling: the row cache's
    assert m.get(1, b'{"instances":[[1,2,3]]}') is None
    assert (m.hits, m.misses) == (1, 3)


def test_least_recently_used_goes_first() -> None:
    m, _, _ = memo(capacity=2)
    remember(m, 1, b"a", (ROWS, None, SCORES))
    remember(m, 1, b"b", (ROWS, None, SCORES))
    assert m.get(1, b"a") is not None  # a is now the most recent
    remember(m, 1, b"c", (ROWS, None, SCORES))
    assert len(m) == 2
    assert m.get(1, b"b") is None
    assert m.get(1, b"a") is not None and m.get(1, b"c") is not None


def test_entries_expire_after_the_ttl() -> None:
    m, clock, _ = memo(ttl_s=10.0)
    remember(m, 1, b"a", (ROWS, None, SCORES))
    clock.now += 9.9
    assert m.get(1, b"a") is not None
    clock.now += 0.2
    assert m.get(1, b"a") is None
    assert len(m) == 0


def test_a_new_generation_empties_it_and_an_unknown_one_answers_nothing() -> None:
    m, _, generation = memo()
    remember(m, 1, b"a", (ROWS, None, SCORES))
    generation[0] = 8  # a flush, here or in another worker
    assert m.get(1, b"a") is None
    assert len(m) == 0
    remember(m, 1, b"a", (ROWS, None, SCORES))
    generation[0] = None  # the shared generation is due for a re-read
    assert m.get(1, b"a") is None
    remember(m, 1, b"b", (ROWS, None, SCORES))
    generation[0] = 8
    assert m.get(1, b"a") is not None
    assert m.get(1, b"b") is None  # not remembered while the generation was unknown


def test_large_bodies_are_not_remembered() -> None:
    m, _, _ = memo()
    big = b"x" * (MAX_BODY_BYTES + 1)
    remember(m, 1, big, (ROWS, None, SCORES))
    assert m.get(1, big) is None


def test_what_the_route_keeps_counts_toward_the_bytes() -> None:
    """A /v1 entry keeps its response encoded ahead, which grows with the rows: it is counted."""
    kept = (b"p" * 3_000, b"s" * 1_000)  # like server.routes_v1.ResponseAround(prefix, suffix)
    m, _, _ = memo(capacity=100)
    remember(m, 1, b"body", (ROWS, kept, SCORES))
    base = len(b"body") + ROWS.nbytes + SCORES.nbytes + ENTRY_OVERHEAD
    assert base + 4_000 <= m.size_bytes <= base + 4_100
    assert payload_bytes(None) == 0 and payload_bytes("abc") == 3
    assert payload_bytes(np.zeros(10, dtype=np.float32)) == 40


def test_never_repeating_bodies_keep_the_doorkeeper_at_its_bound() -> None:
    """A soak in miniature: 50,000 bodies never sent before remember nothing, and the doorkeeper
    holds the newest ``capacity`` hashes only (the oldest are forgotten: a repeat that comes
    after ``capacity`` other bodies counts as a first answer again)."""
    m, _, _ = memo(capacity=1_000)
    for i in range(50_000):
        m.put(1, b"body %d" % i, (ROWS, None, SCORES), m.token())
        if i % 997 == 0:
            assert m.describe()["seen_hashes"] <= 1_000
    state = m.describe()
    assert state["seen_hashes"] == state["max_seen_hashes"] == 1_000
    assert state["entries"] == state["bytes"] == 0
    m.put(1, b"body 49500", (ROWS, None, SCORES), m.token())  # among the newest 1,000: kept
    m.put(1, b"body 0", (ROWS, None, SCORES), m.token())  # long forgotten: seen again only
    assert m.get(1, b"body 49500") is not None and m.get(1, b"body 0") is None


def test_repeating_bodies_plateau_at_the_entry_and_byte_bounds() -> None:
    rows = np.zeros((16, 24), dtype=np.float32)
    size = len(b"body 00000") + rows.nbytes + SCORES.nbytes + ENTRY_OVERHEAD
    m, _, _ = memo(capacity=1_000, max_bytes=300 * size)
    for i in range(5_000):
        remember(m, 1, b"body %05d" % i, (rows, None, SCORES))
    state = m.describe()
    assert state["entries"] == 300 and state["bytes"] == 300 * size <= state["max_bytes"]
    assert state["seen_hashes"] <= 1_000


# --- in the app -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows(model_repo: Path) -> list[list[float]]:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        out: list[list[float]] = data["X"][:8].astype(np.float32).tolist()
    return out


def score_cache(client: Any, model: str) -> ModelScoreCache:
    app = client._transport.app
    cache = app.state.core.registry.get(model).batcher.cache
    assert isinstance(cache, ModelScoreCache)
    return cache


async def test_a_repeated_body_is_answered_by_the_memo_with_the_same_scores(
    model_repo: Path, rows: list[list[float]]
) -> None:
    body = json.dumps({"instances": [rows[0], rows[1]]}).encode()
    async with serving(model_repo) as client:
        cache = score_cache(client, "xgb_small")
        batcher = client._transport.app.state.core.registry.get("xgb_small").batcher
        first = await client.post("/v1/models/xgb_small/predict", content=body)
        await client.post("/v1/models/xgb_small/predict", content=body)  # remembered now
        batches = batcher.stats.batches
        second = await client.post(
            "/v1/models/xgb_small/predict", content=body, headers={"x-request-id": "again"}
        )
        assert batcher.stats.batches == batches  # no batch, no decode
        assert cache.memo is not None and cache.memo.hits == 1
        assert batcher.stats.memo_rows == 2
        state = (await client.get("/v1/models/xgb_small")).json()["detail"][-1]["cache"]
        metrics = (await client.get("/metrics")).text
    assert first.status_code == second.status_code == 200
    a, b = first.json(), second.json()
    assert b["request_id"] == "again" and second.headers["x-request-id"] == "again"
    assert a["predictions"] == b["predictions"]
    assert state["tiers"][0] == "response" and state["rows_hit"] >= 2
    assert 'tabserve_cache_hits_total{model="xgb_small",tier="response"} 2.0' in metrics


async def test_a_remembered_answer_is_byte_for_byte_a_fresh_one(
    model_repo: Path, rows: list[list[float]]
) -> None:
    body = json.dumps({"instances": [rows[0], rows[3]]}).encode()
    url = "/v1/models/xgb_small/predict"
    ids = ["plain", 'quote"and\\backslash', "x" * 128]
    async with serving(model_repo) as client:
        memo = score_cache(client, "xgb_small").memo
        assert memo is not None
        fresh = [
            await client.post(
                url, content=body, headers={"x-request-id": i, "cache-control": "no-cache"}
            )
            for i in ids
        ]
        remembered = [
            await client.post(url, content=body, headers={"x-request-id": i}) for i in ids
        ]
        assert memo.hits == len(ids)
    for a, b in zip(fresh, remembered, strict=True):
        assert a.status_code == b.status_code == 200
        assert a.content == b.content
        assert a.headers["content-length"] == b.headers["content-length"]
    assert remembered[1].json()["request_id"] == ids[1]


async def test_v2_bodies_are_remembered_with_their_own_request(
    model_repo: Path, rows: list[list[float]]
) -> None:
    tensor = {"name": "input", "shape": [1, 24], "datatype": "FP32", "data": rows[2]}
    body = json.dumps({"id": "client-id", "inputs": [tensor]}).encode()
    async with serving(model_repo) as client:
        first = await client.post("/v2/models/xgb_small/infer", content=body)
        await client.post("/v2/models/xgb_small/infer", content=body)
        second = await client.post("/v2/models/xgb_small/infer", content=body)
        assert score_cache(client, "xgb_small").memo.hits == 1  # type: ignore[union-attr]
    assert first.json() == second.json()
    assert second.json()["id"] == "client-id"


async def test_cache_control_and_deadlines_apply_to_remembered_bodies(
    model_repo: Path, rows: list[list[float]]
) -> None:
    body = json.dumps({"instances": [rows[3]]}).encode()
    url = "/v1/models/xgb_small/predict"
    async with serving(model_repo) as client:
        memo = score_cache(client, "xgb_small").memo
        assert memo is not None
        await client.post(url, content=body)
        for directive in ("no-store", "no-cache"):
            r = await client.post(url, content=body, headers={"cache-control": directive})
            assert r.status_code == 200
        assert memo.hits == 0  # neither reads the memo
        cache = score_cache(client, "xgb_small")
        hits_before = cache.hits
        late = await client.post(url, content=body, headers={"x-deadline-ms": "0"})
        assert memo.hits == 1  # found in the memo...
        assert cache.hits == hits_before  # ...but not counted as a cache hit: it was not answered
    assert late.status_code == 504  # past its deadline: refused like a run would be


async def test_a_flush_forgets_remembered_bodies(model_repo: Path, rows: list[list[float]]) -> None:
    body = json.dumps({"instances": [rows[4]]}).encode()
    url = "/v1/models/xgb_small/predict"
    async with serving(model_repo) as client:
        memo = score_cache(client, "xgb_small").memo
        assert memo is not None
        for _ in range(3):
            await client.post(url, content=body)
        assert memo.hits == 1  # remembered on the second answer, answered on the third
        flushed = await client.post("/admin/models/xgb_small/cache/flush", headers=ADMIN)
        assert flushed.status_code == 200
        await client.post(url, content=body)
        await client.post(url, content=body)
        assert memo.hits == 1  # forgotten, then seen and remembered again
        await client.post(url, content=body)
        assert memo.hits == 2


async def test_memo_answers_are_monitored_and_take_feedback(
    model_repo: Path, rows: list[list[float]]
) -> None:
    body = json.dumps({"instances": [rows[5]]}).encode()
    url = "/v1/models/xgb_small/predict"
    async with serving(model_repo, monitoring=True) as client:
        await client.post(url, content=body)
        await client.post(url, content=body)
        hit = await client.post(url, content=body, headers={"x-request-id": "memo-hit"})
        assert score_cache(client, "xgb_small").memo.hits == 1  # type: ignore[union-attr]
        monitoring = (await client.get("/v1/models/xgb_small/monitoring")).json()
        feedback = await client.post(
            "/v1/models/xgb_small/feedback", json={"request_id": "memo-hit", "label": 1}
        )
    assert hit.status_code == 200
    assert monitoring["window"]["rows"] == 3
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["score"] == hit.json()["predictions"][0]["scores"][1]


async def test_memo_is_off_with_zero_entries(model_repo: Path) -> None:
    async with serving(model_repo, cache_memo_entries=0) as client:
        assert score_cache(client, "xgb_small").memo is None
        state = (await client.get("/v1/models/xgb_small")).json()["detail"][-1]["cache"]
    assert state["tiers"] == ["memory"]


class _BrokenMemo:
    """A memo whose every call raises."""

    def memo_token(self) -> object:
        raise RuntimeError("memo broke")

    def recall(self, route: int, body: bytes) -> None:
        raise RuntimeError("memo broke")

    def remember(self, route: int, body: bytes, answer: object, token: object) -> None:
        raise RuntimeError("memo broke")

    def memo_hit(self, rows: int) -> None:
        raise RuntimeError("memo broke")


async def test_a_failing_memo_fails_no_request(model_repo: Path, rows: list[list[float]]) -> None:
    body = json.dumps({"instances": [rows[6]]}).encode()
    async with serving(model_repo) as client:
        batcher = client._transport.app.state.core.registry.get("xgb_small").batcher
        batcher.memo = _BrokenMemo()
        answers = [await client.post("/v1/models/xgb_small/predict", content=body) for _ in "ab"]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["predictions"] == answers[1].json()["predictions"]
    assert batcher.stats.hook_errors == 2  # counted (and logged), never raised


async def test_a_flush_that_cannot_reach_redis_still_empties_the_memo(
    model_repo: Path, rows: list[list[float]], redis_process: RedisProcess
) -> None:
    body = json.dumps({"instances": [rows[7]]}).encode()
    url = "/v1/models/xgb_small/predict"
    # A long refresh interval: the memo's token can only change by the flush itself.
    settings = {"redis_url": redis_process.url, "cache_generation_refresh_s": 600.0}
    async with serving(model_repo, **settings) as client:
        memo = score_cache(client, "xgb_small").memo
        assert memo is not None
        for _ in range(4):  # (the first request reads the shared generation)
            await client.post(url, content=body)
        assert memo.hits == 1
        redis_process.stop()
        flushed = await client.post("/admin/models/xgb_small/cache/flush", headers=ADMIN)
        assert flushed.status_code == 503  # other workers could not be told...
        await client.post(url, content=body)
        assert memo.hits == 1  # ...but this one no longer answers from before the flush
