"""The OpenAPI document and its page: every error answer documented as problem+json, the admin
bearer scheme, examples valid for the served models, and a /schema page that needs no network."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from server.app import create_app, default_extensions
from server.settings import Settings
from tests.server.conftest import AppClient
from tests.support.model_repo import ALL_TEST_MODELS

METHODS = ("get", "put", "post", "delete", "patch")


@asynccontextmanager
async def serving(model_repo: Path) -> AsyncIterator[AppClient]:
    """The app ``tabserve serve`` runs (with its extensions), lifespan in this test's task."""
    settings = Settings(models_dir=model_repo, admin_token="t0ken")
    app = create_app(settings, extensions=default_extensions(settings))
    async with app.lifespan(), AppClient(app) as client:
        yield client


async def _schema(client: AppClient) -> dict[str, Any]:
    answer = await client.get("/schema/openapi.json")
    assert answer.status_code == 200
    schema: dict[str, Any] = answer.json()
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in schema["paths"].items()
        for method in METHODS
        if method in item
    ]


async def test_every_operation_documents_its_errors_as_problem_json(model_repo: Path) -> None:
    async with serving(model_repo) as client:
        await _test_every_operation_documents_its_errors_as_problem_json(client)


async def _test_every_operation_documents_its_errors_as_problem_json(client: AppClient) -> None:
    schema = await _schema(client)
    assert set(schema["components"]["schemas"]["Problem"]["required"]) >= {
        "type",
        "title",
        "status",
        "detail",
        "request_id",
    }
    assert schema["components"]["securitySchemes"]["adminBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["adminBearer"]["description"],
    }
    operations = _operations(schema)
    assert any(path.startswith("/admin/models/") for _, path, _ in operations)  # extension routes
    for method, path, operation in operations:
        responses = operation["responses"]
        expected = {"400", "408", "500", "503"}
        if "{" in path:
            expected.add("404")
        if method == "post":
            expected.add("413")
        if path.endswith(("/predict", "/infer")):
            expected |= {"415", "504"}
        if path.startswith("/admin/"):
            expected |= {"401", "404", "429"}
            assert operation["security"] == [{"adminBearer": []}], path
        else:
            assert "security" not in operation, path
        assert expected <= set(responses), (method, path, sorted(responses))
        for status in expected:
            content = responses[status]["content"]
            assert list(content) == ["application/problem+json"], (path, status)
            assert content["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


async def test_answers_to_bad_requests_are_documented(model_repo: Path) -> None:
    async with serving(model_repo) as client:
        await _test_answers_to_bad_requests_are_documented(client)


async def _test_answers_to_bad_requests_are_documented(client: AppClient) -> None:
    schema = await _schema(client)
    documented = {
        (method, path): set(operation["responses"])
        for method, path, operation in _operations(schema)
    }
    probes = [
        ("post", "/v1/models/{name}/predict", "/v1/models/nope/predict", b"{}"),
        ("post", "/v1/models/{name}/predict", "/v1/models/logreg/predict", b"{nope"),
        ("post", "/v2/models/{name}/infer", "/v2/models/logreg/infer", b'{"inputs": []}'),
        ("get", "/v1/models/{name}", "/v1/models/nope", b""),
        ("post", "/admin/reload", "/admin/reload", b""),
    ]
    for method, template, url, body in probes:
        if method == "get":
            answer = await client.get(url)
        else:
            answer = await client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        assert str(answer.status_code) in documented[(method, template)], (url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


async def test_request_examples_are_valid_for_the_models_they_name(model_repo: Path) -> None:
    async with serving(model_repo) as client:
        await _test_request_examples_are_valid_for_the_models_they_name(client)


async def _test_request_examples_are_valid_for_the_models_they_name(client: AppClient) -> None:
    schema = await _schema(client)
    tried = 0
    for method, path, operation in _operations(schema):
        if method != "post" or not path.endswith(("/predict", "/infer")):
            continue
        examples = operation["requestBody"]["content"]["application/json"]["examples"]
        names = set(ALL_TEST_MODELS)
        if path.endswith("/predict"):
            names |= {f"{name} (object)" for name in ALL_TEST_MODELS}
        assert set(examples) == names, path
        for key, example in examples.items():
            url = path.replace("{name}", key.split()[0]).replace("{version}", "1")
            answer = await client.post(url, json=example["value"])
            assert answer.status_code == 200, (url, answer.text)
            tried += 1
    assert tried == 2 * 2 * len(ALL_TEST_MODELS) + 2 * len(ALL_TEST_MODELS)


async def test_the_schema_page_and_its_assets_are_served_locally(model_repo: Path) -> None:
    async with serving(model_repo) as client:
        await _test_the_schema_page_and_its_assets_are_served_locally(client)


async def _test_the_schema_page_and_its_assets_are_served_locally(client: AppClient) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(links) == 3, links  # css, bundle, standalone preset
    assert "http" not in page.text.split("<body>")[0]  # no CDN, no remote favicon
    for link in links:
        assert link.startswith("/schema/assets/"), link
        asset = await client.get(link)
        assert asset.status_code == 200, link
        assert len(asset.content) > 10_000, link


async def test_metrics_content_type_names_its_charset_once(model_repo: Path) -> None:
    async with serving(model_repo) as client:
        await _test_metrics_content_type_names_its_charset_once(client)


async def _test_metrics_content_type_names_its_charset_once(client: AppClient) -> None:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    content_type = answer.headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1, content_type
