"""Failed admin authentications on a real server process: logged without token material, at a
throttled rate, and limited per client address (429 with Retry-After once over the budget)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

TOKEN = "admin-s3cret-value"
GUESSES = ["", "Bearer wrong-guess-1", "Basic d3Jvbmc6Z3Vlc3M=", "Bearer admin-s3cret-valu"]


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("admin") / "serve.log"
    env = {"TABSERVE_ADMIN_TOKEN": TOKEN, "TABSERVE_ADMIN_AUTH_FAILURES_PER_MINUTE": "4"}
    with ServerProcess(model_repo, env=env, log_path=log) as server:
        yield server


def test_failures_are_limited_per_client_then_429_even_with_the_right_token(
    server: ServerProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert client.post("/admin/reload", headers=right).status_code == 200
        for guess in GUESSES:  # the budget: 4 failures a minute
            headers = {"Authorization": guess} if guess else {}
            answer = client.post("/admin/reload", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Bearer")
        late = ["Bearer another-guess", f"Bearer {TOKEN}"]
        for guess in late:
            answer = client.post("/admin/reload", headers={"Authorization": guess})
            assert answer.status_code == 429
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["type"] == "urn:tabserve:problem:too-many-requests"
            assert 1 <= int(answer.headers["retry-after"]) <= 60
        # other routes are not affected
        assert client.get("/health/ready").status_code == 200
    log = server.log_path.read_text()
    failures = [line for line in log.splitlines() if "event=admin_auth_failed" in line]
    assert 1 <= len(failures) < len(GUESSES)  # logged, throttled (one line per 10 s)
    assert "client=127.0.0.1" in failures[0] and "reason=missing" in failures[0]
    assert "s3cret" not in log and "wrong-guess" not in log and "d3Jvbmc6" not in log
