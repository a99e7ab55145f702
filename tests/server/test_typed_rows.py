"""/v1 with typed columns: string, int and boolean categories, nulls, string labels, multiclass
and regression, served by the real app from real ONNX models and compared with the native
scikit-learn pipelines they were converted from."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pytest

from server.app import create_app, default_extensions
from server.body_bounds import SCAN_FROM
from server.cache.memo import ResponseMemo
from server.columns import UNSEEN, Codec
from server.errors import InvalidInput, PayloadTooLarge
from server.large_bodies import LARGE_BODY
from server.modelcard import Column, load_card, placeholder_card
from server.payload import decode_predict
from server.settings import Settings
from tests.server.conftest import AppClient
from tests.server.typed_models import NAMES, TypedModel, build_typed_repo, frame, training_rows
from tests.support.model_repo import TYPED_MODELS

TASKS = ["churn", "segment", "spend"]


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, TypedModel]]:
    repo = tmp_path_factory.mktemp("typed-models")
    return repo, build_typed_repo(repo)


@pytest.fixture(scope="module")
def typed_repo(typed: tuple[Path, dict[str, TypedModel]]) -> Path:
    return typed[0]


@pytest.fixture(scope="module")
def models(typed: tuple[Path, dict[str, TypedModel]]) -> dict[str, TypedModel]:
    return typed[1]


@asynccontextmanager
async def serving(repo: Path, **overrides: Any) -> AsyncIterator[AppClient]:
    overrides.setdefault("monitoring", False)
    # The typed models are cheaper than a cache miss: a TTL of their own makes them cached.
    overrides.setdefault("cache_model_ttl_s", dict.fromkeys(TASKS, 300.0))
    settings = Settings(models_dir=repo, **overrides)
    app = create_app(settings, extensions=default_extensions(settings))
    async with app.lifespan(), AppClient(app) as client:
        yield client


def raw_rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Rows as a client sends them: strings, a JSON int for the int category, booleans, and
    nulls in ``tenure`` (which allows them)."""
    x, _ = training_rows(n, seed)
    rows: list[dict[str, Any]] = []
    for rec in x.to_dict(orient="records"):
        tenure = rec["tenure"]
        rows.append(
            {
                "region": rec["region"],
                "plan": rec["plan"],
                "store": int(rec["store"]),
                "member": bool(rec["member"]),
                "amount": round(float(rec["amount"]), 3),
                "tenure": None if tenure != tenure else round(float(tenure), 3),
            }
        )
    rows[0]["region"] = "mars"  # unseen: the model's encoder ignores it, so it is served
    rows[1]["tenure"] = None
    return rows


def row(**changes: Any) -> dict[str, Any]:
    base = {
        "region": "north",
        "plan": "pro",
        "store": 20,
        "member": True,
        "amount": 42.5,
        "tenure": 12.0,
    }
    return {**base, **changes}


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Predictions equal but for float32 rounding (ONNX Runtime's sums differ by batch size)."""
    if len(a) != len(b) or any(x.keys() != y.keys() for x, y in zip(a, b, strict=True)):
        return False
    if any(x.get("label") != y.get("label") for x, y in zip(a, b, strict=True)):
        return False
    values = (
        [[x.get("value", x.get("scores"))] for x in a],
        [[y.get("value", y.get("scores"))] for y in b],
    )
    return bool(
        np.allclose(
            np.array(values[0], dtype=float), np.array(values[1], dtype=float), rtol=1e-5, atol=1e-6
        )
    )


async def predict(client: AppClient, name: str, body: object) -> dict[str, Any]:
    r = await client.post(f"/v1/models/{name}/predict", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


# --- answers per task, against the native pipelines ----------------------------------------------


@pytest.mark.parametrize("name", TASKS)
async def test_served_answers_match_the_native_pipeline(
    typed_repo: Path, models: dict[str, TypedModel], name: str
) -> None:
    rows = raw_rows(200)
    model = models[name]
    native = model.native(frame(rows))
    async with serving(typed_repo) as client:
        answer = await predict(client, name, {"instances": rows})
    predictions = answer["predictions"]
    assert len(predictions) == len(rows)
    if model.task == "regression":
        assert "classes" not in answer
        assert all(list(p) == ["value"] for p in predictions)
        served = np.array([[p["value"]] for p in predictions])
        np.testing.assert_allclose(served, native, rtol=1e-5, atol=1e-3)
        return
    assert answer["classes"] == model.classes
    served = np.array([p["scores"] for p in predictions])
    np.testing.assert_allclose(served, native, atol=1e-5)
    labels = [p["label"] for p in predictions]
    if model.task == "binary":
        assert labels == ["Yes" if s[1] >= 0.5 else "No" for s in served.tolist()]
    else:
        assert labels == [model.classes[i] for i in np.argmax(served, axis=1)]
    # the native model's own labels, where its scores are not a near tie
    sure = np.abs(np.sort(native, axis=1)[:, -1] - np.sort(native, axis=1)[:, -2]) > 1e-4
    expected = model.pipeline.predict(frame(rows))
    assert [lab for lab, s in zip(labels, sure, strict=True) if s] == [
        lab for lab, s in zip(expected.tolist(), sure, strict=True) if s
    ]


@pytest.mark.parametrize("name", TASKS)
async def test_lists_in_column_order_answer_as_objects_do(typed_repo: Path, name: str) -> None:
    rows = raw_rows(5)
    async with serving(typed_repo) as client:
        as_objects = await predict(client, name, {"instances": rows})
        as_lists = await predict(client, name, {"instances": [[r[n] for n in NAMES] for r in rows]})
        one = await predict(client, name, {"instances": [[rows[2][n] for n in NAMES]]})
    assert same(as_lists["predictions"], as_objects["predictions"])
    assert same(one["predictions"], [as_objects["predictions"][2]])


async def test_booleans_and_whole_numbers_are_one_value(typed_repo: Path) -> None:
    spellings = [
        row(member=True, store=20),
        row(member=1, store=20.0),
        row(member=1.0, store=20),
    ]
    async with serving(typed_repo) as client:
        answers = [await predict(client, "churn", {"instances": [r]}) for r in spellings]
        other = await predict(client, "churn", {"instances": [row(member=False)]})
    assert same(answers[0]["predictions"], answers[1]["predictions"])
    assert same(answers[0]["predictions"], answers[2]["predictions"])
    assert not same(other["predictions"], answers[0]["predictions"])


async def test_an_unseen_category_is_served_where_the_encoder_ignores_it(
    typed_repo: Path, models: dict[str, TypedModel]
) -> None:
    rows = [row(region="mars"), row(region="a category nobody has seen, and long")]
    async with serving(typed_repo) as client:
        answer = await predict(client, "churn", {"instances": rows})
    native = models["churn"].native(frame(rows))
    served = np.array([p["scores"] for p in answer["predictions"]])
    np.testing.assert_allclose(served, native, atol=1e-5)
    card = load_card(typed_repo / "churn" / "1")
    matrix = decode_predict(json.dumps({"instances": rows}).encode(), card, 10)
    assert matrix[:, NAMES.index("region")].tolist() == [UNSEEN, UNSEEN]


def test_rows_become_the_row_matrix(typed_repo: Path) -> None:
    card = load_card(typed_repo / "churn" / "1")
    body = {
        "instances": [
            row(),
            row(region="west", plan="basic", store=30, member=False, tenure=None),
        ]
    }
    got = decode_predict(json.dumps(body).encode(), card, 10)
    assert got.dtype == np.float32
    expected = np.array([[0, 2, 1, 1, 42.5, 12.0], [3, 0, 2, 0, 42.5, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


# --- refusals: the column at fault, in the one problem shape -------------------------------------

REFUSED = [
    ("unknown-column", {"amt": 1.0}, "row 0: `amt`: unknown feature; did you mean `amount`?"),
    ("string-for-number", {"amount": "12.5"}, "row 0 column 'amount' takes a number, got \"12.5\""),
    ("boolean-for-number", {"amount": True}, "row 0 column 'amount' takes a number, got true"),
    (
        "number-for-category",
        {"region": 5},
        'row 0 column \'region\' takes a category (a string, one of "north", "south", '
        '"east", "west"), got 5',
    ),
    (
        "string-for-int-category",
        {"store": "20"},
        "row 0 column 'store' takes a category (a whole number, one of 10, 20, 30), got \"20\"",
    ),
    (
        "boolean-for-category",
        {"store": True},
        "row 0 column 'store' takes a category (a whole number, one of 10, 20, 30), got true",
    ),
    (
        "unseen-refused",
        {"plan": "gold"},
        'row 0 column \'plan\': "gold" is not a known category (known: "basic", "plus", '
        '"pro"); the model refuses unknown categories',
    ),
    (
        "unseen-int-refused",
        {"store": 40},
        "row 0 column 'store': 40 is not a known category (known: 10, 20, 30); the model "
        "refuses unknown categories",
    ),
    (
        "null-where-no-missing",
        {"amount": None},
        "row 0 column 'amount' is missing (null); the model needs a value",
    ),
    (
        "null-category",
        {"region": None},
        "row 0 column 'region' is missing (null); the model needs a value",
    ),
    (
        "string-for-boolean",
        {"member": "yes"},
        "row 0 column 'member' takes true or false, got \"yes\"",
    ),
    ("number-for-boolean", {"member": 2}, "row 0 column 'member' takes true or false, got 2"),
    (
        "out-of-float32",
        {"amount": 1e39},
        "infinite, NaN or out of float32 range",
    ),
    ("nested-value", {"amount": [1.0]}, "row 0 feature `amount`: expected a number, a string"),
]


@pytest.mark.parametrize("changes, expected", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_a_bad_value_is_refused_naming_its_column(
    typed_repo: Path, changes: dict[str, Any], expected: str
) -> None:
    bad = row(**changes)
    if "amt" in changes:
        del bad["amount"]
    async with serving(typed_repo) as client:
        r = await client.post("/v1/models/churn/predict", json={"instances": [bad]})
        later = await client.post("/v1/models/churn/predict", json={"instances": [row(), bad]})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:tabserve:problem:invalid-input"
    assert expected in problem["detail"], problem["detail"]
    assert later.status_code == 400
    assert expected.replace("row 0", "row 1") in later.json()["detail"]


LIST_REFUSED = [
    ("too-short", {"instances": [[*row().values()][:-1]]}, "expects 6 features per row, got 5"),
    ("empty", {"instances": []}, 'no rows: "instances" is empty'),
    ("mixed-forms", {"instances": [row(), list(row().values())]}, "mixes lists and objects"),
    ("row-not-a-row", {"instances": ["north"]}, "row 0 must be a list of 6 values or an object"),
    ("no-instances", {"rows": [row()]}, "`instances` is missing"),
    (
        "string-in-list",
        {"instances": [["north", "pro", 20, True, "x", 1.0]]},
        "row 0 column 'amount' takes a number, got \"x\"",
    ),
]


@pytest.mark.parametrize(
    "body, expected", [c[1:] for c in LIST_REFUSED], ids=[c[0] for c in LIST_REFUSED]
)
async def test_a_bad_body_is_refused_in_words(
    typed_repo: Path, body: object, expected: str
) -> None:
    async with serving(typed_repo) as client:
        r = await client.post("/v1/models/churn/predict", json=body)
    assert r.status_code == 400, r.text
    assert expected in r.json()["detail"]


async def test_too_many_rows_is_413(typed_repo: Path) -> None:
    async with serving(typed_repo, max_request_rows=3) as client:
        r = await client.post("/v1/models/segment/predict", json={"instances": [row()] * 4})
    assert r.status_code == 413


# --- large bodies, the cache, the memo -----------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
async def test_a_large_body_answers_as_small_ones_do(typed_repo: Path, name: str) -> None:
    rows = raw_rows(1_500, seed=2)
    body = json.dumps({"instances": rows}).encode()
    assert len(body) > LARGE_BODY
    async with serving(typed_repo, max_request_rows=2_000) as client:
        large = await predict(client, name, json.loads(body))
        parts = [
            await predict(client, name, {"instances": rows[i : i + 300]})
            for i in range(0, len(rows), 300)
        ]
    assert same(large["predictions"], [p for part in parts for p in part["predictions"]])


async def test_a_row_longer_than_any_category_allows_is_refused_in_a_large_body(
    typed_repo: Path,
) -> None:
    rows = raw_rows(1_500, seed=2)
    rows[700]["plan"] = "p" * 5_000
    async with serving(typed_repo, max_request_rows=2_000) as client:
        r = await client.post("/v1/models/churn/predict", json={"instances": rows})
        r2 = await client.post(
            "/v1/models/churn/predict", json={"instances": [*rows[:700], row(plan="gold")] * 2}
        )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("row 700 is ")
    assert r2.status_code == 400
    assert "row 700 column 'plan': \"gold\" is not a known category" in r2.json()["detail"]


@pytest.mark.parametrize("name", TASKS)
async def test_the_cache_on_or_off_answers_the_same(typed_repo: Path, name: str) -> None:
    rows = raw_rows(40, seed=3)
    answers = []
    for cache in (False, True):
        async with serving(typed_repo, cache=cache) as client:
            batcher = client.app.state.core.registry.get(name).batcher
            assert (batcher.cache is not None) == cache
            first = await predict(client, name, {"instances": rows})
            again = await predict(client, name, {"instances": rows[::-1]})
            answers.append((first["predictions"], again["predictions"][::-1]))
    assert same(answers[0][0], answers[0][1]) and same(answers[1][0], answers[1][1])
    assert same(answers[0][0], answers[1][0])


@pytest.mark.parametrize("name", TASKS)
async def test_the_memo_answers_every_task_byte_for_byte(typed_repo: Path, name: str) -> None:
    body = json.dumps({"instances": raw_rows(3, seed=4)}).encode()
    url = f"/v1/models/{name}/predict"
    async with serving(typed_repo) as client:
        core = client.app.state.core
        fresh = await client.post(
            url, content=body, headers={"x-request-id": "a", "cache-control": "no-cache"}
        )
        await client.post(url, content=body)
        batcher = core.registry.get(name).batcher
        batches = batcher.stats.batches
        remembered = await client.post(url, content=body, headers={"x-request-id": "a"})
        memo = batcher.cache.memo if batcher.cache is not None else None
        assert isinstance(memo, ResponseMemo)
        assert memo.hits >= 1 and batcher.stats.batches == batches
    assert fresh.status_code == remembered.status_code == 200
    assert fresh.content == remembered.content


# --- the model view, the documentation's examples, the runner ------------------------------------


async def test_the_model_view_shows_task_columns_and_metrics(typed_repo: Path) -> None:
    async with serving(typed_repo) as client:
        views = {n: (await client.get(f"/v1/models/{n}")).json() for n in TASKS}
    churn = views["churn"]
    assert churn["task"] == "binary" and churn["classes"] == ["No", "Yes"]
    assert churn["threshold"] == 0.5 and churn["metrics"]["task"] == "binary"
    assert churn["detail"][-1]["positive_class"] == "Yes"
    schema = churn["schema"]
    assert schema["layout"] == "columns" and schema["feature_names"] == NAMES
    columns = {c["name"]: c for c in schema["columns"]}
    assert columns["region"] == {
        "name": "region",
        "kind": "categorical",
        "categories": ["north", "south", "east", "west"],
        "allow_missing": False,
        "unknown": "serve",
        "dtype": "string",
    }
    assert columns["store"]["categories"] == [10, 20, 30]
    assert columns["member"]["kind"] == "boolean"
    assert columns["tenure"]["allow_missing"] and not columns["amount"]["allow_missing"]
    segment = views["segment"]
    assert segment["task"] == "multiclass" and segment["metrics"]["task"] == "multiclass"
    assert segment["classes"] == ["bargain", "loyal", "premium"]
    assert segment["threshold"] is None and segment["detail"][-1]["positive_class"] is None
    spend = views["spend"]
    assert spend["task"] == "regression" and spend["classes"] == []
    assert spend["metrics"]["task"] == "regression" and "mae" in spend["metrics"]
    assert spend["threshold"] is None


async def test_the_documented_examples_are_valid_typed_requests(typed_repo: Path) -> None:
    async with serving(typed_repo) as client:
        schema = (await client.get("/schema/openapi.json")).json()
        operation = schema["paths"]["/v1/models/{name}/predict"]["post"]
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        assert set(examples) == {*TASKS, *(f"{n} (object)" for n in TASKS)}
        for key, example in examples.items():
            name = key.split()[0]
            value = example["value"]
            first = value["instances"][0]
            values = first if isinstance(first, list) else [first[n] for n in NAMES]
            assert isinstance(values[0], str) and isinstance(values[2], int)
            assert isinstance(values[3], bool)
            await predict(client, name, value)


async def test_the_runner_warms_up_on_the_row_matrix_and_runs_in_its_thread(
    typed_repo: Path,
) -> None:
    rows = raw_rows(20, seed=5)
    async with serving(typed_repo) as client:
        inline = await predict(client, "churn", {"instances": rows})
        runner = client.app.state.core.registry.get("churn").runner
        assert runner.inline and runner.cost_us > 0
    async with serving(typed_repo, inline_max_cost_us=0.0) as client:
        threaded = await predict(client, "churn", {"instances": rows})
        view = (await client.get("/v1/models/churn")).json()
    assert same(threaded["predictions"], inline["predictions"])
    assert view["cost"]["mode"] in {"thread", "inline"}  # inline only when pinned to one core


def test_the_typed_answer_encodes_string_labels(typed_repo: Path) -> None:
    from server.payload import encode_predict

    card = load_card(typed_repo / "segment" / "1")
    scores = np.array([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]], dtype=np.float32)
    body = msgspec.json.decode(encode_predict(card, "rid", scores))
    assert list(body) == ["model", "version", "request_id", "classes", "predictions"]
    assert [p["label"] for p in body["predictions"]] == ["loyal", "bargain"]
    spend = load_card(typed_repo / "spend" / "1")
    body = msgspec.json.decode(encode_predict(spend, "rid", np.array([[3.5]], np.float32)))
    assert body == {
        "model": "spend",
        "version": 1,
        "request_id": "rid",
        "predictions": [{"value": 3.5}],
    }


# --- the bundled typed models of the session's test repository ----------------------------------


def holdout_requests(version_dir: Path, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The first ``n`` hold-out rows: as the row matrix, and as a client sends them (raw
    categories, booleans, null for missing)."""
    card = load_card(version_dir)
    codec = Codec(card.input)
    with np.load(version_dir / "holdout.npz") as data:
        matrix = np.asarray(data["X"][:n], dtype=np.float32)
    columns = [codec.decode_column(j, matrix[:, j]).tolist() for j in range(matrix.shape[1])]
    rows = [
        {
            name: None if isinstance(v, float) and v != v else v
            for name, v in zip(card.input.feature_names, values, strict=True)
        }
        for values in zip(*columns, strict=True)
    ]
    return matrix, rows


@pytest.mark.parametrize("name", TYPED_MODELS)
async def test_bundled_typed_models_answer_raw_rows_as_onnx_runtime_does(
    model_repo: Path, name: str
) -> None:
    version_dir = model_repo / name / "1"
    card = load_card(version_dir)
    matrix, rows = holdout_requests(version_dir, 64)
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    output = card.outputs.value if card.task == "regression" else card.outputs.probabilities
    expected = np.asarray(session.run([output], Codec(card.input).onnx_feeds(matrix))[0])
    async with serving(model_repo) as client:
        answer = await predict(client, name, {"instances": rows})
        as_lists = await predict(client, name, {"instances": [list(r.values()) for r in rows[:5]]})
    predictions = answer["predictions"]
    assert same(as_lists["predictions"], predictions[:5])
    if card.task == "regression":
        assert "classes" not in answer
        served = np.array([p["value"] for p in predictions])
        np.testing.assert_allclose(served, expected.reshape(-1), rtol=1e-5, atol=1e-4)
    else:
        assert answer["classes"] == card.classes
        np.testing.assert_allclose(
            np.array([p["scores"] for p in predictions]), expected, atol=1e-5
        )
        assert [p["label"] for p in predictions] == [
            card.classes[i] for i in np.argmax(expected, axis=1)
        ]


# --- the card alone: bounds before decoding, missing values per column ---------------------------


def test_categories_with_commas_and_brackets_pass_the_pre_decode_bound() -> None:
    odd = ["a,b,c,d", "[x], {y}", "plain"]
    card = placeholder_card(
        "odd",
        columns=[
            Column(name="what", kind="categorical", categories=odd, dtype="string"),
            Column(name="amount"),
        ],
        layout="columns",
    )
    rows = [{"what": odd[i % 2], "amount": 1.5} for i in range(2_000)]
    body = json.dumps({"instances": rows}).encode()
    assert len(body) > SCAN_FROM
    matrix = decode_predict(body, card, 2_000)
    assert matrix[:2, 0].tolist() == [0.0, 1.0]
    with pytest.raises(PayloadTooLarge):  # still refused past the rows a request may carry
        decode_predict(json.dumps({"instances": rows * 3}).encode(), card, 2_000)


def test_a_numeric_model_takes_null_only_where_its_column_allows() -> None:
    card = placeholder_card(
        "mixed", columns=[Column(name="a"), Column(name="b", allow_missing=True)]
    )
    got = decode_predict(b'{"instances": [[1.5, null], [2, 3]]}', card, 10)
    assert got[0, 0] == 1.5 and np.isnan(got[0, 1]) and got[1, 1] == 3.0
    got = decode_predict(b'{"instances": [{"a": 2, "b": null}]}', card, 10)
    assert got[0, 0] == 2.0 and np.isnan(got[0, 1])
    with pytest.raises(InvalidInput, match="row 1 feature 'a' is missing"):
        decode_predict(b'{"instances": [[1.5, null], [null, 2]]}', card, 10)


def random_value(column: Column, rng: random.Random) -> Any:
    """A value ``column`` takes (known or unseen category, boolean, number, null where allowed),
    or now and then one it refuses."""
    draw = rng.random()
    if draw < 0.05:
        return rng.choice([None, True, "x", 2.5, 10**20])
    if column.allow_missing and draw < 0.15:
        return None
    if column.kind == "categorical":
        return rng.choice([*column.categories, "unseen", 7])
    if column.kind == "boolean":
        return rng.choice([True, False, 0, 1])
    return rng.choice([0, 1, -3.25, 1e30, rng.uniform(-1e3, 1e3)])


@pytest.mark.parametrize("name", ["churn", *TYPED_MODELS])
def test_the_quick_path_decodes_as_the_codec_does_value_by_value(
    typed_repo: Path, model_repo: Path, name: str
) -> None:
    repo = typed_repo if name == "churn" else model_repo
    card = load_card(repo / name / "1")
    codec = Codec(card.input)
    rng = random.Random(name)
    for trial in range(300):
        n = 1 + trial % 3
        rows = [[random_value(c, rng) for c in card.input.columns] for _ in range(n)]
        names = card.input.feature_names
        objects = [dict(zip(names, r, strict=True)) for r in rows]
        body = {"instances": rows if trial % 2 else objects}
        try:
            expected: np.ndarray | str = np.array(
                [[codec.code(j, v, i) for j, v in enumerate(r)] for i, r in enumerate(rows)],
                dtype=np.float32,
            )
        except InvalidInput as exc:
            expected = str(exc)
        try:
            got: np.ndarray | str = decode_predict(json.dumps(body).encode(), card, 10)
        except InvalidInput as exc:
            got = str(exc)
        if isinstance(expected, str):
            assert got == expected, body
        else:
            assert isinstance(got, np.ndarray), (got, body)
            np.testing.assert_array_equal(got, expected)


async def test_served_unseen_categories_are_counted_by_the_monitor(typed_repo: Path) -> None:
    rows = [row(region="mars" if i % 4 == 0 else "north") for i in range(40)]
    async with serving(typed_repo, monitoring=True) as client:
        await predict(client, "churn", {"instances": rows})
        give_up = time.monotonic() + 30.0  # the monitor observes off the response path
        while True:
            snapshot = (await client.get("/v1/models/churn/monitoring")).json()
            if snapshot["window"]["rows"] >= len(rows) or time.monotonic() > give_up:
                break
            await asyncio.sleep(0.01)
    assert snapshot["window"]["rows"] == len(rows), snapshot["window"]
    features = {f["name"]: f for f in snapshot["features"]}
    assert features["region"]["unseen_rate"] == pytest.approx(0.25)
    assert features["plan"]["unseen_rate"] == 0.0
