"""Apps with the extensions `tabserve serve` runs (monitoring, and the shadow with it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app, default_extensions
from server.settings import Settings
from tests.server.conftest import AppClient, MakeClient


@pytest.fixture
def make_client(model_repo: Path) -> MakeClient:
    """``async with make_client(**settings) as client:`` a served app with default extensions."""

    @asynccontextmanager
    async def _make(**overrides: Any) -> AsyncIterator[AppClient]:
        overrides.setdefault("models_dir", model_repo)
        settings = Settings(**overrides)
        app = create_app(settings, extensions=default_extensions(settings))
        async with app.lifespan(), AppClient(app) as client:
            yield client

    return _make
