"""`make serve` honours the TABSERVE_* environment; a make variable on the command line wins."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loadtests.serveproc import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TABSERVE_", "MAKE")) and k not in {"PORT", "HOST", "MFLAGS"}
    }
    return {**env, **extra}


def _dry_run(*make_vars: str, **env: str) -> list[str]:
    """The lines `make -n serve` would run, from the repository's Makefile."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", *make_vars],
        cwd=ROOT,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def _serve_line(lines: list[str]) -> str:
    [line] = [line for line in lines if line.startswith(".venv/bin/tabserve serve")]
    return line


def test_environment_port_reaches_the_server() -> None:
    lines = _dry_run(TABSERVE_PORT="8001", TABSERVE_HOST="127.0.0.2")
    assert _serve_line(lines) == ".venv/bin/tabserve serve"  # the server reads TABSERVE_*
    assert any("serving on http://127.0.0.2:8001" in line for line in lines)


def test_make_variable_beats_the_environment() -> None:
    lines = _dry_run("PORT=8002", "HOST=0.0.0.0", "WORKERS=2", TABSERVE_PORT="8001")
    assert _serve_line(lines) == ".venv/bin/tabserve serve --host 0.0.0.0 --port 8002 --workers 2"
    assert any("serving on http://127.0.0.1:8002" in line for line in lines)


def test_plain_port_and_host_environment_variables_are_not_settings() -> None:
    # HOST is often the machine's name in a shell, PORT some other program's: neither is ours.
    lines = _dry_run(PORT="9999", HOST="buildbox")
    assert _serve_line(lines) == ".venv/bin/tabserve serve"
    assert any("serving on http://127.0.0.1:8000" in line for line in lines)


def test_models_dir_reaches_both_the_build_and_the_server() -> None:
    lines = _dry_run("MODELS_DIR=/srv/models")
    assert ".venv/bin/tabserve export build --if-missing --models-dir /srv/models" in lines
    assert _serve_line(lines) == ".venv/bin/tabserve serve --models-dir /srv/models"


def test_admin_token_file_and_how_to_call_admin() -> None:
    lines = _dry_run("ADMIN_TOKEN_FILE=/run/secrets/tabserve")
    assert _serve_line(lines) == ".venv/bin/tabserve serve --admin-token-file /run/secrets/tabserve"
    hint = 'Authorization: Bearer $(cat /run/secrets/tabserve)" http://127.0.0.1:8000/admin/reload'
    assert any(hint in line for line in lines)


def test_admin_token_from_the_environment_is_never_printed() -> None:
    lines = _dry_run(TABSERVE_ADMIN_TOKEN="s3cret-token-value", TABSERVE_PORT="8003")
    text = "\n".join(lines)
    assert "s3cret-token-value" not in text
    assert 'Bearer $TABSERVE_ADMIN_TOKEN" http://127.0.0.1:8003/admin/reload' in text


def test_admin_off_says_how_to_turn_it_on() -> None:
    text = "\n".join(_dry_run())
    assert "admin routes off" in text and "make serve ADMIN_TOKEN_FILE=" in text


@pytest.mark.e2e
def test_make_serve_listens_on_the_environment_port(model_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "make-serve.log").open("wb")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "serve", f"MODELS_DIR={model_repo}"],
        cwd=ROOT,
        env=_env(TABSERVE_PORT=str(port), TABSERVE_CACHE="false"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make and the server it starts share one process group
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail((tmp_path / "make-serve.log").read_text()[-2000:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    output = (tmp_path / "make-serve.log").read_text()
    assert f"serving on http://127.0.0.1:{port}" in output and "admin routes off" in output
