"""The processes a sweep cell needs: the server, a Redis-protocol server, one Locust run.

Each is started pinned to its CPUs (``taskset -c``) when asked, and stopped by the PID we got
when starting it, in ``finally``; nothing is looked up or killed by name. The server runs in its
own session so that its worker processes (``--workers N``) go down with it.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


def pin_prefix(cpus: str | None) -> list[str]:
    """``taskset -c CPUS`` when pinning is asked for and possible, else nothing."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        return []
    return [taskset, "-c", cpus]


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process and its live descendants."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def core_busy_seconds(cpus: str | None) -> float | None:
    """Busy (non-idle) CPU seconds of the listed cores so far, from /proc/stat; None if unknown.

    Compared with our own processes' CPU over the same interval it shows how much of the cores
    other work took: the noise in a measurement on a shared machine.
    """
    if not cpus:
        return None
    wanted = {f"cpu{c.strip()}" for c in cpus.split(",") if c.strip().isdigit()}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    found = False
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [int(v) for v in parts[1:9]]
            busy += sum(values) - values[3] - values[4]  # minus idle and iowait
            found = True
    return busy / ticks if found else None


def children_cpu_seconds() -> float:
    """CPU seconds of this process's terminated, waited-for children (a finished Locust run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stop_popen(proc: subprocess.Popen[bytes], timeout: float, group: bool) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; with ``group``, the whole session we started
    (a server's worker processes too, even when the leader already exited)."""

    def signal_all(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            elif proc.poll() is None:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is not None and not group:
        return
    signal_all(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_all(signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class ServerProcess:
    """``tabserve serve`` on a free loopback port, configured by ``TABSERVE_*`` variables."""

    models_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cpus: str | None = None
    workers: int = 1
    redis_url: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, probe_model: str, probe_body: bytes, timeout: float = 90.0) -> None:
        cmd = [
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
            "--workers",
            str(self.workers),
        ]
        if self.redis_url:
            cmd += ["--redis-url", self.redis_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABSERVE_")}
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not _get_ok(f"{self.base_url}/health/ready"):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"server exited with {code}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)
        # Ready means loaded; one real prediction proves the model answers before load starts.
        url = f"{self.base_url}/v1/models/{probe_model}/predict"
        for _ in range(20):
            if _post_ok(url, probe_body):
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server is ready but {url} does not answer 200: {self.log_tail()}")

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def warm_up(self, model: str, body: bytes, requests: int = 50) -> None:
        url = f"{self.base_url}/v1/models/{model}/predict"
        for _ in range(requests):
            _post_ok(url, body)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        if self.proc is not None:
            _stop_popen(self.proc, timeout=20.0, group=True)
            self.proc = None


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            resp.read()
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _post_ok(url: str, body: bytes) -> bool:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            resp.read()
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class RedisServer:
    """A Redis-protocol server for the cells that use the Redis tier.

    Reuses the test harness's binary finder and process wrapper (``tests/support``), so the
    sweep finds the same ``redis-server``/``valkey-server`` as the tests do.
    """

    def __init__(self, workdir: Path, cpus: str | None = None) -> None:
        from tests.support.redis_server import RedisProcess, find_redis_binary

        binary = find_redis_binary()
        if binary is None:
            raise RuntimeError("no redis-server or valkey-server found (install the dev extras)")
        self._process = RedisProcess(binary, workdir)
        self.cpus = cpus

    @property
    def url(self) -> str:
        return self._process.url

    def start(self) -> None:
        self._process.start()
        proc = self._process.proc
        if self.cpus and proc is not None:
            cpus = {int(c) for c in self.cpus.split(",") if c.strip().isdigit()}
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)

    def cpu_seconds(self) -> float:
        proc = self._process.proc
        return tree_cpu_seconds(proc.pid) if proc is not None else 0.0

    def stop(self) -> None:
        self._process.stop()


@dataclass
class LocustRun:
    """One bounded, headless Locust run; returns its exit code and CPU use."""

    cmd: list[str]
    log_path: Path
    timeout_s: float

    def run(self) -> tuple[int, float, float]:
        """(exit code, wall seconds, CPU seconds of the Locust process)."""
        cpu_before = children_cpu_seconds()
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _stop_popen(proc, timeout=10.0, group=False)
                code = -9
            finally:
                _stop_popen(proc, timeout=10.0, group=False)
        return code, time.monotonic() - started, children_cpu_seconds() - cpu_before
