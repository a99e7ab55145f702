"""The fast dispatch answers exactly what Litestar's handlers answer, for good and bad requests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.dispatch import match
from server.routes_v1 import V1
from server.routes_v2 import V2
from tests.server.conftest import MakeClient
from tests.server.test_validation import BAD_BODIES, ROW, case, headers_of


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v1/models/m/predict", ("m", None, V1)),
        ("/v1/models/m/versions/3/predict", ("m", 3, V1)),
        ("/v2/models/m/infer", ("m", None, V2)),
        ("/v2/models/m/versions/12/infer", ("m", 12, V2)),
        ("/v1/models/m/infer", None),  # v1 has no infer
        ("/v2/models/m/predict", None),
        ("/v1/models//predict", None),
        ("/v1/models/m/versions/x/predict", None),  # Litestar's handler: 404
        ("/v1/models/m/versions/+1/predict", None),  # int() reads these as 1: not canonical
        ("/v1/models/m/versions/0_1/predict", None),
        ("/v1/models/m/versions/01/predict", None),
        ("/v1/models/m/versions/ 1/predict", None),
        ("/v1/models/m/versions/\u0661/predict", None),
        ("/v2/models/m/versions/0/infer", ("m", 0, V2)),
        ("/v1/models/m/things/3/predict", None),
        ("/v1/models/m", None),
        ("/v1/models/m/predict/", None),
        ("v1/models/m/predict", None),
        ("/v1/tables/m/predict", None),
    ],
)
def test_match(path: str, expected: tuple[object, ...] | None) -> None:
    found = match(path)
    assert (found[:3] if found else None) == expected


GOOD = {
    "v1-latest": ("/v1/models/logreg/predict", case({"instances": [ROW, ROW]})),
    "v1-version": ("/v1/models/xgb_small/versions/1/predict", case({"instances": [ROW]})),
    "v2-latest": (
        "/v2/models/logreg/infer",
        case({"inputs": [{"name": "input", "shape": [1, 24], "datatype": "FP32", "data": ROW}]}),
    ),
    "v2-version": (
        "/v2/models/logreg/versions/1/infer",
        case(
            {
                "id": "abc",
                "inputs": [{"name": "input", "shape": [1, 24], "datatype": "FP32", "data": ROW}],
            }
        ),
    ),
}
CASES = {**GOOD, **{k: (p, b) for k, (p, b, _, _) in BAD_BODIES.items()}}


@pytest.mark.parametrize("case_id", sorted(CASES))
async def test_fast_and_litestar_paths_answer_alike(make_client: MakeClient, case_id: str) -> None:
    path, body = CASES[case_id]
    headers = {**headers_of(case_id), "x-request-id": f"same-{case_id}"}
    answers = []
    for fast in (True, False):
        async with make_client(max_request_rows=10, fast_dispatch=fast) as client:
            r = await client.post(path, content=body, headers=headers)
            answers.append((r.status_code, sorted(r.headers.multi_items()), r.content))
            assert r.headers["x-request-id"] == f"same-{case_id}"
    assert answers[0] == answers[1]
    assert answers[0][0] == (200 if case_id in GOOD else BAD_BODIES[case_id][2])


@pytest.mark.parametrize("fast", [True, False])
async def test_other_methods_and_routes_still_reach_litestar(
    make_client: MakeClient, fast: bool
) -> None:
    async with make_client(fast_dispatch=fast) as client:
        wrong_method = await client.get("/v1/models/logreg/predict")
        described = await client.get("/v1/models/logreg")
        no_floor = await client.post("/bench/floor-asgi/logreg", content=b"{}")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("application/problem+json")
    assert described.status_code == 200
    assert no_floor.status_code == 404  # the bench floor only with bench_floor_route


async def test_the_asgi_floor_is_served_only_when_asked(make_client: MakeClient) -> None:
    async with make_client(bench_floor_route=True, max_body_bytes=1024) as client:
        r = await client.post("/bench/floor-asgi/anything", content=b'{"instances": []}')
        litestar_floor = await client.post("/bench/floor/anything", content=b"{}")
        too_big = await client.post("/bench/floor-asgi/x", content=b"x" * 2048)
    assert (r.status_code, r.content) == (200, b'{"ok":true}')
    assert (litestar_floor.status_code, litestar_floor.content) == (200, b'{"ok":true}')
    assert too_big.status_code == 413


async def test_oversized_body_is_refused_on_the_fast_path(make_client: MakeClient) -> None:
    body = case({"instances": [ROW] * 200})
    async with make_client(max_body_bytes=1024) as client:
        r = await client.post("/v1/models/logreg/predict", content=body)
        after = await client.post("/v1/models/logreg/predict", json={"instances": [ROW]})
    assert r.status_code == 413
    assert r.json()["type"] == "urn:tabserve:problem:payload-too-large"
    assert after.status_code == 200


@pytest.mark.parametrize("fast", [True, False])
async def test_a_malformed_host_header_is_refused_alike(
    make_client: MakeClient, fast: bool
) -> None:
    body = case({"instances": [ROW]})
    async with make_client(fast_dispatch=fast) as client:
        r = await client.post(
            "/v1/models/logreg/predict", content=body, headers={"host": "bad host<>"}
        )
    assert r.status_code == 400
    assert r.json()["detail"] == "Invalid host header"


async def test_predict_under_a_root_path_takes_the_fast_path(make_client: MakeClient) -> None:
    async with make_client() as client:
        core_predict = client.app.state.core.predict
        seen: list[tuple[str, bool]] = []

        async def spy(scope: Any, *args: Any) -> Any:
            seen.append((scope["path"], "route_handler" in scope))  # set by Litestar's router
            return await core_predict(scope, *args)

        client.app.state.core.predict = spy
        transport = httpx.ASGITransport(app=client.app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as rooted:
            r = await rooted.post("/api/v1/models/logreg/predict", json={"instances": [ROW]})
    assert r.status_code == 200
    assert seen == [("/api/v1/models/logreg/predict", False)]
