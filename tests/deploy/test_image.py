"""The container image (``deploy/Dockerfile``) builds and serves a bundled model.

Building takes minutes (a virtualenv with ONNX Runtime from PyPI), so these tests run only with
``TABSERVE_IMAGE_TESTS=1`` (``make imagetest``) and skip otherwise. Settings, from the environment:

- ``TABSERVE_CONTAINER_CLI``: the container command (default: ``podman``, else ``docker``, from
  PATH); skipped with the reason when it cannot run a container here;
- ``TABSERVE_IMAGE_BASE``: the ``BASE`` build argument (default: the Dockerfile's public slim
  Python image);
- ``TABSERVE_IMAGE``: the tag to build (default ``localhost/tabserve:test``);
  ``TABSERVE_IMAGE_REUSE=1`` uses that image as it is when it exists instead of rebuilding;
- ``TABSERVE_IMAGE_BUNDLED=1`` also builds ``--target bundled`` (it trains the bundled models in
  the build: several more minutes) and serves from it with nothing mounted.

Every container is started detached, stopped with SIGTERM and removed by its ID; images are left
in place (they are the build cache of the next run).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests.serveproc import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1800

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("TABSERVE_IMAGE_TESTS") != "1",
        reason="builds a container image (minutes): run `make imagetest` "
        "(or set TABSERVE_IMAGE_TESTS=1)",
    ),
]


def container_cli() -> list[str] | None:
    configured = os.environ.get("TABSERVE_CONTAINER_CLI")
    if configured:
        return shlex.split(configured)
    for name in ("podman", "docker"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def run(cli: list[str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli() -> list[str]:
    found = container_cli()
    if found is None:
        pytest.skip("no container command (podman or docker) on PATH")
    probe = run(found, "info")
    if probe.returncode != 0:
        pytest.skip(f"{found[0]} cannot run here: {probe.stderr.strip()[-300:]}")
    return found


def build(cli: list[str], tag: str, *extra: str) -> None:
    if (
        os.environ.get("TABSERVE_IMAGE_REUSE") == "1"
        and run(cli, "image", "inspect", tag).returncode == 0
    ):
        return
    args = ["build", "-f", "deploy/Dockerfile", "-t", tag, *extra]
    if "podman" in " ".join(cli):
        args += ["--format", "docker"]  # keeps HEALTHCHECK (OCI images drop it)
    base = os.environ.get("TABSERVE_IMAGE_BASE")
    if base:
        args += ["--build-arg", f"BASE={base}"]
    done = subprocess.run(
        [*cli, *args, str(ROOT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def image(cli: list[str]) -> str:
    tag = os.environ.get("TABSERVE_IMAGE", "localhost/tabserve:test")
    build(cli, tag)
    return tag


class Container:
    """One detached container serving on ``port`` (host networking or a published port)."""

    def __init__(self, cli: list[str], image: str, *args: str) -> None:
        self.cli = cli
        self.port = free_port()
        started = run(
            cli,
            "run",
            "-d",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-e",
            f"TABSERVE_PORT={self.port}",
            "-p",
            f"127.0.0.1:{self.port}:{self.port}",
            *args,
            image,
        )
        assert started.returncode == 0, started.stderr
        self.id = started.stdout.strip().splitlines()[-1]
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            state = run(self.cli, "inspect", "--format", "{{.State.Running}}", self.id)
            assert state.stdout.strip() == "true", self.logs()
            time.sleep(0.5)
        raise AssertionError(f"not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        out = run(self.cli, "logs", self.id)
        return out.stdout + out.stderr

    def stop(self, grace_s: int = 20) -> tuple[int, float]:
        """SIGTERM (``stop``), SIGKILL after ``grace_s``: the exit code and the seconds it took."""
        started = time.monotonic()
        run(self.cli, "stop", "-t", str(grace_s), self.id, timeout=grace_s + 30)
        took = time.monotonic() - started
        code = run(self.cli, "inspect", "--format", "{{.State.ExitCode}}", self.id)
        return int(code.stdout.strip() or -1), took

    def remove(self) -> None:
        run(self.cli, "rm", "-f", self.id)


@pytest.fixture
def readable_repo(model_repo: Path, tmp_path: Path) -> Path:
    """A copy of the test repository that the image's user (uid 10001) can read."""
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


def predict_both_protocols(url: str, rows: np.ndarray) -> None:
    v1 = httpx.post(url + "/v1/models/xgb_small/predict", json={"instances": rows.tolist()})
    assert v1.status_code == 200, v1.text
    assert len(v1.json()["predictions"]) == len(rows)
    v2 = httpx.post(
        url + "/v2/models/xgb_small/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.ravel().tolist(),
                }
            ]
        },
    )
    assert v2.status_code == 200, v2.text


def test_the_runtime_image_has_no_training_dependencies_and_runs_as_non_root(
    cli: list[str], image: str
) -> None:
    inspected = json.loads(run(cli, "image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    healthcheck = config.get("Healthcheck") or inspected.get("Healthcheck")  # docker, podman
    assert healthcheck and "/health/ready" in " ".join(healthcheck["Test"])
    print(f"\nruntime image {image}: {inspected['Size'] / 1e6:.0f} MB")
    probe = run(
        cli,
        "run",
        "--rm",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import importlib.util as u, json; "
        "print(json.dumps([m for m in ('sklearn', 'xgboost', 'scipy', 'onnx', 'skl2onnx', "
        "'onnxmltools', 'export', 'loadtests') if u.find_spec(m)]))",
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []


def test_the_image_serves_a_mounted_model_repository_and_drains_on_sigterm(
    cli: list[str], image: str, readable_repo: Path
) -> None:
    with np.load(readable_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:8].astype(np.float32)
    container = Container(cli, image, "-v", f"{readable_repo}:/models:ro")
    try:
        container.wait_ready()
        predict_both_protocols(container.url, rows)
        health = run(cli, "healthcheck", "run", container.id) if "podman" in cli[-1] else None
        if health is not None:
            assert health.returncode == 0, health.stdout + health.stderr
        code, took = container.stop()
        logs = container.logs()
    finally:
        container.remove()
    assert code == 0, logs
    assert took < 20, f"SIGTERM took {took:.1f} s"
    assert "Application shutdown complete" in logs  # the graceful path, not a kill


@pytest.mark.skipif(
    os.environ.get("TABSERVE_IMAGE_BUNDLED") != "1",
    reason="trains the bundled models inside the build: set TABSERVE_IMAGE_BUNDLED=1",
)
def test_the_bundled_target_serves_baked_models_without_training_data(cli: list[str]) -> None:
    tag = os.environ.get("TABSERVE_IMAGE", "localhost/tabserve:test") + "-bundled"
    build(cli, tag, "--target", "bundled")
    listing = run(cli, "run", "--rm", "--entrypoint", "sh", tag, "-c", "find /models -type f")
    files = listing.stdout.split()
    assert any(f.endswith("/xgb_small/1/model.onnx") for f in files), listing.stdout
    assert not [f for f in files if f.endswith("holdout.npz")]
    container = Container(cli, tag)
    try:
        container.wait_ready()
        rows = np.zeros((2, 24), dtype=np.float32)
        predict_both_protocols(container.url, rows)
    finally:
        container.stop()
        container.remove()
