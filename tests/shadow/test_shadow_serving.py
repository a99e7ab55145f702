"""A candidate in shadow on a real app: it never answers, its answers are paired with the
primary's on labelled rows, and promotion (admin or automatic) swaps the primary with nothing
failed; a worse shadow is never promoted automatically."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from server.routing import read_routing, update_routing
from server.shadow.extension import ShadowExtension
from tests.server.conftest import AppClient, MakeClient, Reference, core_of
from tests.server.test_reload import publish_as
from tests.support.polling import eventually

TOKEN = "shadow-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
EVERY_ROW = {"shadow_cpu_share": 1.0}
"""No CPU budget: these tests count on the shadow scoring every row."""


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    """``xgb_small``: xgb_small answers (v1), logreg waits as v2; ``swapped``: the other way
    round. On these 6,000 training rows logreg has the better PR-AUC."""
    dest = tmp_path / "models"
    dest.mkdir()
    for name in ("xgb_small", "logreg"):
        shutil.copytree(model_repo / name, dest / name)
    publish_as(dest, "logreg", "xgb_small", 2)
    shutil.copytree(dest / "logreg", dest / "swapped")
    (dest / "swapped" / "1" / "model.json").write_bytes(
        (dest / "logreg" / "1" / "model.json").read_bytes().replace(b'"logreg"', b'"swapped"', 1)
    )
    publish_as(dest, "xgb_small", "swapped", 2)
    for name in ("xgb_small", "swapped"):  # the first version answers
        update_routing(dest, name, lambda r: r.pinned(1), action="pin", by="admin")
    return dest


@pytest.fixture
def labelled(model_repo: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        return data["X"].astype(np.float32), data["y"].astype(np.int64)


def shadow_ext(client: AppClient) -> ShadowExtension:
    found = [e for e in client.app.state.extensions if isinstance(e, ShadowExtension)]
    assert len(found) == 1
    return found[0]


async def predict_all(client: AppClient, name: str, X: np.ndarray, prefix: str) -> np.ndarray:
    """Score ``X`` in 16-row requests sent 8 at a time (so batches coalesce); the scores."""
    out: list[Any] = []
    for start in range(0, len(X), 128):
        answers = await asyncio.gather(
            *(
                client.post(
                    f"/v1/models/{name}/predict",
                    json={"instances": X[i : i + 16].tolist()},
                    headers={"X-Request-ID": f"{prefix}-{i}"},
                )
                for i in range(start, min(start + 128, len(X)), 16)
            )
        )
        for answer in answers:
            assert answer.status_code == 200, answer.text
            out.extend(p["scores"][1] for p in answer.json()["predictions"])
    return np.asarray(out)


async def wait_scored(client: AppClient, rows: int) -> None:
    stats = shadow_ext(client).scorer.stats
    await eventually(lambda: stats.rows_scored + stats.rows_skipped >= rows, within_s=10.0)
    assert stats.rows_scored == rows and stats.rows_skipped == 0


async def label_all(client: AppClient, name: str, y: np.ndarray, prefix: str) -> None:
    for start in range(0, len(y), 16):
        for k in range(min(16, len(y) - start)):
            got = await client.post(
                f"/v1/models/{name}/feedback",
                json={"request_id": f"{prefix}-{start}", "row": k, "label": int(y[start + k])},
            )
            assert got.status_code == 200, got.text


async def test_a_shadow_never_answers_and_is_compared_on_the_same_rows(
    make_client: MakeClient, repo: Path, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = labelled[0][:400], labelled[1][:400]
    primary = Reference(repo / "xgb_small" / "1").scores(X)[:, 1]
    candidate = Reference(repo / "xgb_small" / "2").scores(X)[:, 1]
    async with make_client(models_dir=repo, admin_token=TOKEN, cache=False, **EVERY_ROW) as client:
        before = await predict_all(client, "xgb_small", X, "a")
        got = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": 2}, headers=ADMIN
        )
        assert got.status_code == 200, got.text
        assert got.json() == {"model": "xgb_small", "primary": 1, "shadow": 2, "previous": []}
        during = await predict_all(client, "xgb_small", X, "b")
        await wait_scored(client, len(X))
        await label_all(client, "xgb_small", y, "b")
        view = (await client.get("/v1/models/xgb_small/shadow")).json()
        detail = (await client.get("/v1/models/xgb_small")).json()
        shadow_monitor = (await client.get("/v1/models/xgb_small/versions/2/monitoring")).json()
    # the primary's answers are the same with a shadow on as without, and are v1's
    np.testing.assert_array_equal(before, during)
    np.testing.assert_allclose(during, primary, atol=1e-6)
    # the pairs: every labelled row, both models' PR-AUC on exactly those rows
    paired = view["paired"]
    assert paired["labels"] == len(y) and paired["metric"] == "pr_auc"
    assert paired["primary"] == pytest.approx(average_precision_score(y, primary), abs=1e-4)
    assert paired["shadow"] == pytest.approx(average_precision_score(y, candidate), abs=1e-4)
    assert view["primary"] == 1 and view["shadow"] == 2 and view["refused"] is False
    assert view["shadow_quality"]["labels"] == len(y) == view["primary_quality"]["labels"]
    assert shadow_monitor["window"]["rows"] == len(X)  # only the copy made while shadowing
    assert detail["latest"] == 1 and detail["shadow"] == 2
    assert [e["action"] for e in detail["routing_events"]] == ["pin", "shadow"]


async def test_a_better_shadow_is_promoted_automatically_with_nothing_failed(
    make_client: MakeClient, repo: Path, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = labelled
    primary = Reference(repo / "xgb_small" / "1").scores(X)[:, 1]
    candidate = Reference(repo / "xgb_small" / "2").scores(X)[:, 1]
    assert average_precision_score(y, candidate) > average_precision_score(y, primary) + 0.02
    settings = {"shadow_promote_after_labels": 300, "shadow_promote_margin": 0.01, **EVERY_ROW}
    async with make_client(models_dir=repo, admin_token=TOKEN, cache=False, **settings) as client:
        got = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": 2}, headers=ADMIN
        )
        assert got.status_code == 200
        await predict_all(client, "xgb_small", X[:600], "c")
        await wait_scored(client, 600)

        async def traffic() -> list[int]:
            codes = []
            for i in range(60):
                r = await client.post(
                    "/v1/models/xgb_small/predict", json={"instances": X[i : i + 1].tolist()}
                )
                codes.append(r.status_code)
            return codes

        labels = asyncio.create_task(label_all(client, "xgb_small", y[:600], "c"))
        codes = await traffic()
        await labels
        for _ in range(100):  # the promotion runs as its own task
            if core_of(client).registry.get("xgb_small").version == 2:
                break
            await asyncio.sleep(0.02)
        after = await predict_all(client, "xgb_small", X[:32], "d")
        detail = (await client.get("/v1/models/xgb_small")).json()
        # a label for a row answered before the promotion goes to the version that answered it
        # (version 2 scored that row too, in shadow: not an answer of its own)
        late = await client.post(
            "/v1/models/xgb_small/feedback", json={"request_id": "c-0", "row": 0, "label": 0}
        )
        fresh = await client.post(
            "/v1/models/xgb_small/feedback", json={"request_id": "d-0", "row": 0, "label": 0}
        )
    assert late.status_code == 200 and late.json()["version"] == 1
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    assert set(codes) == {200}
    np.testing.assert_allclose(after, candidate[:32], atol=1e-6)
    routing = read_routing(repo, "xgb_small")
    assert routing.primary == 2 and routing.shadow is None and routing.previous == [1]
    promoted = detail["routing_events"][-1]
    assert promoted["action"] == "promote" and promoted["by"] == "auto"
    assert "pr_auc" in promoted["reason"]


async def test_a_worse_shadow_is_never_promoted_automatically(
    make_client: MakeClient, repo: Path, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = labelled
    primary = Reference(repo / "swapped" / "1").scores(X)[:, 1]
    candidate = Reference(repo / "swapped" / "2").scores(X)[:, 1]
    assert average_precision_score(y, candidate) < average_precision_score(y, primary)
    settings = {"shadow_promote_after_labels": 100, "shadow_promote_margin": 0.0, **EVERY_ROW}
    async with make_client(models_dir=repo, admin_token=TOKEN, cache=False, **settings) as client:
        await client.post("/admin/models/swapped/shadow", json={"version": 2}, headers=ADMIN)
        await predict_all(client, "swapped", X, "e")
        await wait_scored(client, len(X))
        await label_all(client, "swapped", y, "e")
        await asyncio.sleep(0.1)
        view = (await client.get("/v1/models/swapped/shadow")).json()
        answering = core_of(client).registry.get("swapped").version
    assert answering == 1 and read_routing(repo, "swapped").primary == 1
    assert view["paired"]["labels"] == len(y) and view["paired"]["promote"] is False
    assert view["paired"]["shadow"] < view["paired"]["primary"]


async def test_promote_and_rollback_by_admin(
    make_client: MakeClient, repo: Path, labelled: tuple[np.ndarray, np.ndarray]
) -> None:
    X = labelled[0][:4]
    v2 = Reference(repo / "xgb_small" / "2").scores(X)[:, 1]
    v1 = Reference(repo / "xgb_small" / "1").scores(X)[:, 1]
    async with make_client(models_dir=repo, admin_token=TOKEN) as client:
        nothing = await client.post("/admin/models/xgb_small/promote", json={}, headers=ADMIN)
        first = await client.post("/admin/models/xgb_small/rollback", headers=ADMIN)
        unknown = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": 9}, headers=ADMIN
        )
        itself = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": 1}, headers=ADMIN
        )
        bad = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": "2"}, headers=ADMIN
        )
        anonymous = await client.post("/admin/models/xgb_small/promote", json={"version": 2})
        up = await client.post(
            "/admin/models/xgb_small/promote", json={"version": 2, "reason": "test"}, headers=ADMIN
        )
        on_v2 = await predict_all(client, "xgb_small", X, "f")
        down = await client.post("/admin/models/xgb_small/rollback", headers=ADMIN)
        on_v1 = await predict_all(client, "xgb_small", X, "g")
    assert nothing.status_code == 409 and "no shadow" in nothing.json()["detail"]
    assert first.status_code == 409 and "roll back" in first.json()["detail"]
    assert unknown.status_code == 404 and itself.status_code == 409 and bad.status_code == 400
    assert anonymous.status_code == 401
    assert up.json() == {"model": "xgb_small", "primary": 2, "shadow": None, "previous": [1]}
    assert down.json() == {"model": "xgb_small", "primary": 1, "shadow": None, "previous": []}
    np.testing.assert_allclose(on_v2, v2, atol=1e-6)
    np.testing.assert_allclose(on_v1, v1, atol=1e-6)
    events = [
        json.loads(line)
        for line in (repo / "xgb_small" / "routing-events.jsonl").read_text().splitlines()
    ]
    assert [(e["action"], e["by"]) for e in events] == [
        ("pin", "admin"),
        ("promote", "admin"),
        ("rollback", "admin"),
    ]
    assert events[1]["reason"] == "test"


async def test_a_shadow_with_other_columns_is_refused(
    make_client: MakeClient, repo: Path, model_repo: Path
) -> None:
    publish_as(repo, "logreg", "xgb_small", 3)
    card = repo / "xgb_small" / "3" / "model.json"
    first = json.loads(card.read_text())["input"]["columns"][0]["name"]
    card.write_text(card.read_text().replace(f'"{first}"', '"renamed"'))
    async with make_client(models_dir=repo, admin_token=TOKEN) as client:
        got = await client.post(
            "/admin/models/xgb_small/shadow", json={"version": 3}, headers=ADMIN
        )
    assert got.status_code == 409 and "input columns" in got.json()["detail"], got.text
