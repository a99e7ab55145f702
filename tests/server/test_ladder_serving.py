"""Serving a model's ladder (issue 15): degrade instead of refuse, and the cascade.

A real ``xgb_small`` built with its ladder by the export pipeline, real ONNX Runtime sessions,
the real app over ASGI. Each answer is compared with the ONNX file of the rung that says it
answered (``X-Model-Variant``), labelled at that rung's own threshold.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pytest

from export.build import BuildSettings, build_model
from export.data import fraud_dataset
from export.recipes import RECIPES
from server.ladder import CASCADE, FULL, order, quality, variant_card
from server.modelcard import (
    CARD_FILE,
    BinaryMetrics,
    Cascade,
    ModelCard,
    Variant,
    load_card,
)
from server.settings import Settings
from tests.server.conftest import AppClient, core_of
from tests.support.model_repo import TEST_ROWS

PREDICT = "/v1/models/xgb_small/predict"


@pytest.fixture(scope="session")
def ladder_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``xgb_small`` version 1 with its ladder (variant files and card entries)."""
    dest = tmp_path_factory.mktemp("ladder-models")
    settings = BuildSettings(
        models_dir=dest, seed=0, n_jobs=1, cv_folds=3, cost_budget_s=0.05, ladder=True
    )
    build_model(RECIPES["xgb_small"], fraud_dataset(TEST_ROWS, seed=0), settings)
    return dest


@pytest.fixture(scope="session")
def card(ladder_repo: Path) -> ModelCard:
    found = load_card(ladder_repo / "xgb_small" / "1")
    assert found.variants
    return found


@pytest.fixture(scope="session")
def rows(ladder_repo: Path) -> np.ndarray:
    with np.load(ladder_repo / "xgb_small" / "1" / "holdout.npz") as data:
        x: np.ndarray = data["X"].astype(np.float32)
    return x


def scores_of(version_dir: Path, onnx_file: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(version_dir / onnx_file), providers=["CPUExecutionProvider"])
    out = session.run(["probabilities"], {"input": x})[0]
    return np.asarray(out, dtype=np.float32)[:, 1]


def app_client(repo: Path, **overrides: Any) -> Any:
    """The app as ``tabserve serve`` builds it (cache and monitoring on), over ASGI."""
    from server.app import create_app, default_extensions

    @asynccontextmanager
    async def make() -> Any:
        settings = Settings(models_dir=repo, **overrides)
        app = create_app(settings, extensions=default_extensions(settings))
        async with app.lifespan(), AppClient(app) as client:
            yield client

    return make()


DEGRADE: dict[str, Any] = {"degrade_objective_ms": {"xgb_small": 50.0}}


async def test_an_idle_model_answers_itself_and_says_so(
    ladder_repo: Path, card: ModelCard, rows: np.ndarray
) -> None:
    async with app_client(ladder_repo, **DEGRADE) as client:
        r = await client.post(PREDICT, json={"instances": rows[:5].tolist()})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200
    assert r.headers["x-model-variant"] == FULL
    expected = scores_of(ladder_repo / "xgb_small" / "1", card.onnx.file, rows[:5])
    got = [p["scores"][1] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (
        'tabserve_variant_rows_total{model="xgb_small",variant="full",version="1"} 5.0' in metrics
    )


async def test_without_the_setting_nothing_changes(
    ladder_repo: Path, card: ModelCard, rows: np.ndarray
) -> None:
    async with app_client(ladder_repo) as client:
        r = await client.post(PREDICT, json={"instances": rows[:2].tolist()})
        assert r.status_code == 200 and "x-model-variant" not in r.headers
        assert core_of(client).registry.get("xgb_small").ladder is None
        detail = (await client.get("/v1/models/xgb_small")).json()["detail"][0]
    assert [v["name"] for v in detail["ladder"]] == [v.name for v in card.variants]
    assert not any(v["serving"] for v in detail["ladder"])
    assert detail["degrade_objective_ms"] is None and detail["cascade"] is None


async def test_the_model_view_shows_the_ladder_serving(ladder_repo: Path, card: ModelCard) -> None:
    async with app_client(ladder_repo, **DEGRADE) as client:
        detail = (await client.get("/v1/models/xgb_small")).json()["detail"][0]
    assert detail["degrade_objective_ms"] == 50.0
    assert {v["name"] for v in detail["ladder"] if v["serving"]} == {v.name for v in order(card)}


async def test_the_choice_follows_the_queue(ladder_repo: Path, rows: np.ndarray) -> None:
    """A simulated full queue: requests queued on the model's own batcher (the batch task has
    not run yet). Idle, the ladder serves the model; with more queued than 30% of the
    objective it steps down a rung at a time (at most one step per 5 ms), a request whose budget
    the level's rung would miss goes to a cheaper rung or the cheapest, and once the queues stay
    short for half a second the ladder climbs back a rung at a time."""
    async with app_client(ladder_repo, max_queue_rows=100_000, **DEGRADE) as client:
        model = core_of(client).registry.get("xgb_small")
        ladder = model.ladder
        assert ladder is not None
        names = [r.name for r in ladder.rungs]
        assert names[0] == FULL and names[1:] == [v.name for v in order(model.card)]
        assert len(names) >= 2
        by_name = {v.name: quality(v.metrics) for v in model.card.variants}
        qualities = [by_name[n] for n in names[1:]]
        assert qualities == sorted(qualities, reverse=True)
        now = time.monotonic()
        assert ladder.pick(1, now + 0.05, now).name == FULL  # idle: the model itself
        full = ladder.rungs[0].batcher
        big = np.repeat(rows[:1000], 4, axis=0)
        queued = [
            asyncio.create_task(full.predict(big, deadline=now + 60, request_id=f"q{i}"))
            for i in range(8)
        ]
        await asyncio.sleep(0)  # each task ran to its first wait: queued, none run
        assert full.queued_rows >= 7 * len(big)
        t1 = time.monotonic()
        backlog = full.backlog_s()
        cheapest = ladder.rungs[-1].batcher.wait_s(1)
        assert backlog > 1000 * cheapest and backlog > 0.3 * 0.05
        # past 30% of the objective queued: one step down, to the most accurate variant; a
        # request with the objective as its budget fits on no rung (they share the core with
        # the model's backlog), so it goes to the cheapest
        objective = 0.049  # just under the 50 ms objective
        assert ladder.pick(1, t1 + objective, t1).name == names[-1] and ladder.level == 1
        # a budget longer than the objective that the model's queue meets: the model
        assert ladder.pick(1, t1 + backlog * 2, t1).name == FULL and ladder.level == 1
        deeper = min(2, len(names) - 1)  # 5 ms later, one more step (none past the cheapest)
        ladder.pick(1, t1 + objective, t1 + 0.01)
        assert ladder.level == deeper
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        assert full.backlog_s() == 0.0
        t2 = t1 + 0.01 + 0.5  # calm for half a second: one rung back up, then the next
        assert ladder.pick(1, t2 - 0.1 + objective, t2 - 0.1).name == names[deeper]
        for level in range(deeper - 1, -1, -1):
            t2 += 0.5
            assert ladder.pick(1, t2 + objective, t2).name == names[level]
            assert ladder.level == level


@pytest.fixture
def collector_quiet() -> Iterator[None]:
    """No collection during the test: late in the whole suite the test process holds a large
    heap, and one full collection outlasts a budget of a few tens of milliseconds (the server
    itself freezes its heap at start-up and raises the young threshold; a test app does not)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_quiet")
async def test_under_a_backlog_variants_answer_at_their_own_threshold(
    ladder_repo: Path, card: ModelCard, rows: np.ndarray
) -> None:
    """A backlog on the model's own queue (large requests queued straight on its batcher) that
    takes longer to drain than a 45 ms budget (the objective is 50 ms): requests with that
    budget are answered by a variant, one with a long budget waits for the model. Every answer
    is the ONNX scores of the rung it names, labelled at that rung's threshold; each rung's rows
    are counted and monitored apart, and feedback finds a row a variant answered."""
    version_dir = ladder_repo / "xgb_small" / "1"
    thresholds = {FULL: card.threshold} | {
        v.name: variant_card(card, v).threshold for v in card.variants
    }
    files = {FULL: card.onnx.file} | {v.name: v.onnx.file for v in card.variants}
    reference = {name: scores_of(version_dir, f, rows) for name, f in files.items()}
    n = 20
    starts = [i * n for i in range(8)]
    async with app_client(ladder_repo, max_queue_rows=1_000_000, **DEGRADE) as client:
        model = core_of(client).registry.get("xgb_small")
        full = model.batcher
        assert model.ladder is not None
        deadline = time.monotonic() + 60
        for rung in model.ladder.rungs[1:]:  # each variant's first run, before the clock starts
            await rung.batcher.predict(rows[:n], deadline=deadline, request_id="warm-up")
        big = np.repeat(rows, 20, axis=0)  # 24k rows a request
        backlog = [
            asyncio.create_task(full.predict(big, deadline=deadline, request_id=f"q{i}"))
            for i in range(8)
        ]
        await asyncio.sleep(0)
        requests = [
            client.post(
                PREDICT,
                json={"instances": rows[s : s + n].tolist()},
                headers={"x-latency-budget-ms": "45", "x-request-id": f"burst-{s}"},
            )
            for s in starts
        ]
        patient = client.post(
            PREDICT,
            json={"instances": rows[:n].tolist()},
            headers={"x-latency-budget-ms": "60000", "x-deadline-ms": "60000"},
        )
        *responses, waited = await asyncio.gather(*requests, patient)
        for t in backlog:
            t.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
        answered: Counter[str] = Counter()
        for s, r in zip(starts, responses, strict=True):
            assert r.status_code == 200, r.text
            rung = r.headers["x-model-variant"]
            assert rung != FULL
            answered[rung] += n
            got = r.json()["predictions"]
            want = reference[rung][s : s + n]
            np.testing.assert_allclose([p["scores"][1] for p in got], want, atol=1e-5)
            assert [p["label"] for p in got] == [int(x >= thresholds[rung]) for x in want]
        assert waited.status_code == 200 and waited.headers["x-model-variant"] == FULL
        answered[FULL] += n
        metrics = (await client.get("/metrics")).text
        for rung, count in answered.items():
            line = f'tabserve_variant_rows_total{{model="xgb_small",variant="{rung}",version="1"}}'
            assert f"{line} {float(count)}" in metrics
        # Feedback on a row a variant answered lands in that variant's live quality.
        rung = responses[0].headers["x-model-variant"]
        fb = await client.post(
            "/v1/models/xgb_small/feedback",
            json={"request_id": "burst-0", "row": 0, "label": 1},
        )
        assert fb.status_code == 200, fb.text
        view = (await client.get("/v1/models/xgb_small/monitoring")).json()
    variants = view["variants"]
    assert variants[rung]["quality"]["labels"] == 1
    assert variants[rung]["thresholds"]["decision_threshold"] == thresholds[rung]
    assert variants[rung]["window"]["rows"] == answered[rung] + n  # and its warm-up's
    assert view["quality"]["labels"] == 0


async def test_the_budget_header_is_checked(ladder_repo: Path, rows: np.ndarray) -> None:
    async with app_client(ladder_repo, **DEGRADE) as client:
        r = await client.post(
            PREDICT,
            json={"instances": rows[:1].tolist()},
            headers={"x-latency-budget-ms": "soon"},
        )
    assert r.status_code == 400
    assert "X-Latency-Budget-Ms" in r.json()["detail"]


@pytest.fixture
def cascade_repo(ladder_repo: Path, card: ModelCard, rows: np.ndarray, tmp_path: Path) -> Path:
    """The ladder model with a cascade band written into its card (the band, not how export
    chose it, is what serving is tested on): the cheapest variant, between the 40th and 80th
    percentiles of its hold-out scores."""
    repo = tmp_path / "models"
    shutil.copytree(ladder_repo, repo)
    cheapest = min(card.variants, key=lambda v: v.trees)
    cheap = scores_of(repo / "xgb_small" / "1", cheapest.onnx.file, rows)
    low, high = (float(q) for q in np.quantile(cheap, [0.4, 0.8]))
    cascade = Cascade(
        variant=cheapest.name,
        low=low,
        high=high,
        tolerance=0.005,
        escalated_share=0.1,
        metrics=card.metrics,  # type: ignore[arg-type]
        us_per_row_batch64=1.0,
    )
    path = repo / "xgb_small" / "1" / CARD_FILE
    doc = json.loads(path.read_text())
    doc["cascade"] = json.loads(msgspec.json.encode(cascade))
    path.write_text(json.dumps(doc))
    assert load_card(path.parent).cascade == cascade
    return repo


async def test_the_cascade_escalates_only_the_rows_in_its_band(
    cascade_repo: Path, card: ModelCard, rows: np.ndarray
) -> None:
    version_dir = cascade_repo / "xgb_small" / "1"
    cascade = load_card(version_dir).cascade
    assert cascade is not None
    cheapest = next(v for v in card.variants if v.name == cascade.variant)
    cheap = scores_of(version_dir, cheapest.onnx.file, rows)
    full = scores_of(version_dir, card.onnx.file, rows)
    unsure = (cheap >= cascade.low) & (cheap <= cascade.high)
    assert 0 < unsure.sum() < len(rows)
    want = np.where(unsure, full, cheap)
    async with app_client(cascade_repo, cascade_models=["xgb_small"], cache=False) as client:
        got: list[float] = []
        for start in range(0, len(rows), 100):
            r = await client.post(PREDICT, json={"instances": rows[start : start + 100].tolist()})
            assert r.status_code == 200 and r.headers["x-model-variant"] == CASCADE
            predictions = r.json()["predictions"]
            got += [p["scores"][1] for p in predictions]
            assert [p["label"] for p in predictions] == [
                int(x >= card.threshold) for x in want[start : start + 100]
            ]
        metrics = (await client.get("/metrics")).text
    np.testing.assert_allclose(got, want, atol=1e-5)
    kept = len(rows) - int(unsure.sum())
    line = 'tabserve_cascade_rows_total{{model="xgb_small",path="{}",version="1"}} {}'
    assert line.format("full", float(unsure.sum())) in metrics
    assert line.format("variant", float(kept)) in metrics


def test_a_cascade_outside_the_scores_is_refused(card: ModelCard) -> None:
    from server.modelcard import card_problems

    bad = msgspec.structs.replace(
        card,
        cascade=Cascade(
            variant="nope",
            low=0.7,
            high=0.2,
            tolerance=0.005,
            escalated_share=0.1,
            metrics=card.metrics,  # type: ignore[arg-type]
            us_per_row_batch64=1.0,
        ),
    )
    problems = " ".join(card_problems(bad))
    assert "variant 'nope'" in problems and "band" in problems


async def test_grpc_takes_the_budget_and_names_the_rung(
    ladder_repo: Path, card: ModelCard, rows: np.ndarray
) -> None:
    """ModelInfer with ``x-latency-budget-ms`` metadata: the answer's ``variant`` parameter
    names what answered, a budget that is no number is INVALID_ARGUMENT, and under a backlog a
    variant answers over gRPC as over REST."""
    import grpc

    from server.oip import grpc_predict_v2_pb2 as pb
    from server.oip import grpc_predict_v2_pb2_grpc as pb_grpc
    from server.oip.extension import GrpcExtension
    from tests.oip.test_grpc import raw_request
    from tests.support.ports import free_port

    settings = Settings(
        models_dir=ladder_repo, grpc_port=free_port(), max_queue_rows=1_000_000, **DEGRADE
    )
    from server.app import create_app

    app = create_app(settings, extensions=[GrpcExtension(settings)])
    async with (
        app.lifespan(),
        grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        request = raw_request("xgb_small", rows[:4])
        idle = await stub.ModelInfer(request, metadata=[("x-latency-budget-ms", "50")])
        assert idle.parameters["variant"].string_param == FULL
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(request, metadata=[("x-latency-budget-ms", "soon")])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        full = app.state.core.registry.get("xgb_small").batcher
        big = np.repeat(rows, 20, axis=0)
        backlog = [
            asyncio.create_task(
                full.predict(big, deadline=time.monotonic() + 60, request_id=f"{i}")
            )
            for i in range(8)
        ]
        await asyncio.sleep(0)
        busy = await stub.ModelInfer(request, metadata=[("x-latency-budget-ms", "30")])
        for t in backlog:
            t.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
    rung = busy.parameters["variant"].string_param
    assert rung in {v.name for v in card.variants}
    assert isinstance(busy, pb.ModelInferResponse)


def test_the_ladder_keeps_only_rungs_cheaper_than_every_rung_above(card: ModelCard) -> None:
    """Most accurate first; a variant less accurate and no cheaper than one above it is left
    off (a small sibling model can beat the big model's truncations on both)."""
    base = card.variants[0]
    assert isinstance(base.metrics, BinaryMetrics)

    def variant(name: str, pr_auc: float, us: float) -> Variant:
        metrics = msgspec.structs.replace(base.metrics, pr_auc=pr_auc)
        cost = msgspec.structs.replace(base.cost, us_per_row_batch64=us)
        return msgspec.structs.replace(base, name=name, metrics=metrics, cost=cost)

    full_cost = msgspec.structs.replace(card.cost, us_per_row_batch64=10.0)
    variants = [
        variant("k50", 0.90, 5.0),
        variant("k25", 0.80, 2.5),  # dominated by the sibling: less accurate, costlier
        variant("k12", 0.70, 12.0),  # costlier than the sibling (and the full model)
        variant("sibling", 0.85, 0.5),
    ]
    trimmed = msgspec.structs.replace(card, variants=variants, cost=full_cost)
    assert [v.name for v in order(trimmed)] == ["k50", "sibling"]
