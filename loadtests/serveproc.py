"""A real ``tabserve serve`` process on a loopback port: start, wait until ready, always stop.

One implementation for everything that runs the server as a separate process: the end-to-end
tests (``tests/support/server_process.py``), ``tabserve bench`` and the load-test sweep.

    with ServeProcess(models_dir, env={"TABSERVE_ADMIN_TOKEN": "t"}, cpus="0") as server:
        httpx.get(server.url + "/health/ready")

It runs ``python -m server.cli serve`` (the entry point of the ``tabserve`` script) in a session
of its own, optionally pinned with ``taskset -c``, with ``TABSERVE_*`` variables from the caller
only (never inherited), its output in a log file whose tail is shown when it fails to start. It
is stopped by the PID it was started with (SIGTERM to its whole session so ``--workers N`` go
too, then SIGKILL after a timeout); nothing is looked up or killed by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def pin_prefix(cpus: str | None) -> list[str]:
    """``taskset -c CPUS`` when pinning is asked for and taskset exists, else nothing."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    return [taskset, "-c", cpus] if taskset else []


def http_ok(url: str, body: bytes | None = None, timeout: float = 1.0) -> bool:
    """True when a GET (or a JSON POST of ``body``) to ``url`` answers 200."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float, *, group: bool) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code.

    With ``group``, ``proc`` must lead a session of its own (``start_new_session=True``): the
    whole session is signalled, and once the leader is gone its remaining processes get SIGKILL
    (workers outliving a leader that exited on its own). Without, only ``proc``, if still running.
    """

    def send(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    if not group and proc.poll() is not None:
        return proc.returncode
    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=10)
    if group:
        send(signal.SIGKILL)
    return proc.returncode


class ServeProcess:
    """One ``tabserve serve`` process (and its workers)."""

    def __init__(
        self,
        models_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        cpus: str | None = None,
        log_path: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.port = port or free_port()
        self.env = dict(env or {})
        self.args = list(args)
        self.cpus = cpus
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"tabserve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        return [
            *pin_prefix(self.cpus),
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--models-dir",
            str(self.models_dir),
            *self.args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait until ``/health/ready`` answers 200 (every model loaded and warm)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")}
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while not self.is_ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"tabserve serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tabserve serve not ready after {timeout:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def is_ready(self) -> bool:
        return http_ok(self.url + "/health/ready")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the session (graceful drain), SIGKILL after ``timeout``; the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        # the session we started: the server and its workers
        return stop_process(proc, timeout, group=True)

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
