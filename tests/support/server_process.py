"""A real ``tabserve serve`` process on a free loopback port, for end-to-end tests.

    with ServerProcess(models_dir, env={"TABSERVE_ADMIN_TOKEN": "t"}) as server:
        httpx.get(server.url + "/health/ready")

Starts ``python -m server.cli serve`` (the same entry point as the ``tabserve`` script), waits
until ``/health/ready`` answers 200, and always stops the process by its PID (SIGTERM, then
SIGKILL after a timeout). Its stderr goes to a log file whose tail is shown if it fails to start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port


class ServerProcess:
    def __init__(
        self,
        models_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        log_path: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.port = port or free_port()
        self.extra_env = env or {}
        self.extra_args = args or []
        self.log_path = log_path or models_dir.parent / f"tabserve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")}
        env.update(self.extra_env)
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--models-dir",
            str(self.models_dir),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"tabserve serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                if self.is_ready():
                    return
                time.sleep(0.05)
            raise RuntimeError(f"tabserve serve not ready after {timeout}s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health/ready", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
