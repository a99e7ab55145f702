"""Fixtures for the serving core: apps on the session's real model repository, ORT references."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from litestar import Litestar

from server.app import create_app
from server.core import Core
from server.settings import Settings


class AppClient(httpx.AsyncClient):
    """httpx over ASGI (requests really run concurrently, unlike Litestar's test client, which
    serialises them), with the app at hand."""

    def __init__(self, app: Litestar) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://tabserve.test")
        self.app = app


MakeClient = Callable[..., AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def make_client(model_repo: Path) -> MakeClient:
    """``async with make_client(max_queue_rows=8) as client:`` an app on ``model_repo``
    (lifespan run on enter and exit); overrides go to Settings."""

    @asynccontextmanager
    async def _make(**overrides: Any) -> AsyncIterator[AppClient]:
        overrides.setdefault("models_dir", model_repo)
        app = create_app(Settings(**overrides))
        # The lifespan runs in this test's event loop (Litestar's test client would run the app in
        # a thread of its own and serialise requests); requests go through httpx over ASGI.
        async with app.lifespan(), AppClient(app) as client:
            yield client

    return _make


def core_of(client: AppClient) -> Core:
    core: Core = client.app.state.core
    return core


@pytest.fixture(scope="session")
def holdout(model_repo: Path) -> np.ndarray:
    """The xgb_small hold-out rows (the same 24 fraud features as logreg)."""
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows: np.ndarray = data["X"].astype(np.float32)
    return rows


class Reference:
    """Direct ONNX Runtime scores of a model version, one row at a time."""

    def __init__(self, version_dir: Path) -> None:
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def scores(self, rows: np.ndarray) -> np.ndarray:
        out = [
            self.session.run(["probabilities"], {"input": rows[i : i + 1]})[0]
            for i in range(len(rows))
        ]
        return np.concatenate(out).astype(np.float32)


@pytest.fixture(scope="session")
def reference(model_repo: Path) -> Callable[[str, int], Reference]:
    cache: dict[tuple[str, int], Reference] = {}

    def get(name: str, version: int = 1, repo: Path | None = None) -> Reference:
        base = repo or model_repo
        key = (str(base / name), version)
        if key not in cache:
            cache[key] = Reference(base / name / str(version))
        return cache[key]

    return get  # type: ignore[return-value]


def feature_names(model_repo: Path, name: str = "logreg") -> list[str]:
    from server.modelcard import load_card

    return load_card(model_repo / name / "1").input.feature_names
