"""The processes a sweep cell needs: the server, a Redis-protocol server, one Locust run.

Each is started pinned to its CPUs (``taskset -c``) when asked, and stopped by the PID we got
when starting it, in ``finally``; nothing is looked up or killed by name. The server runs in its
own session so that its worker processes (``--workers N``) go down with it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtests.redisproc import RedisProcess, find_redis_binary
from loadtests.serveproc import ServeProcess, http_ok, stop_process


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


class ServerProcess(ServeProcess):
    """``tabserve serve`` for one sweep cell: ready, then proven by one real prediction."""

    def __init__(
        self,
        models_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
        workers: int = 1,
        redis_url: str | None = None,
    ) -> None:
        args = ["--workers", str(workers)]
        if redis_url:
            args += ["--redis-url", redis_url]
        super().__init__(models_dir, env=env, args=args, cpus=cpus, log_path=log_path)

    @property
    def base_url(self) -> str:
        return self.url

    def start_and_probe(self, probe_model: str, probe_body: bytes, timeout: float = 90.0) -> None:
        """Start, then one real prediction proves the model answers before load starts."""
        self.start(timeout)
        url = f"{self.url}/v1/models/{probe_model}/predict"
        for _ in range(20):
            if http_ok(url, probe_body, timeout=2.0):
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server is ready but {url} does not answer 200: {self.log_tail()}")

    def warm_up(self, model: str, body: bytes, requests: int = 50) -> None:
        url = f"{self.url}/v1/models/{model}/predict"
        for _ in range(requests):
            http_ok(url, body, timeout=2.0)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0


class RedisServer:
    """A Redis-protocol server for the cells that use the Redis tier.

    The same binary finder and process wrapper as the tests and the bench
    (``loadtests.redisproc``): ``redis-server``/``valkey-server`` from PATH or the dev extras.
    """

    def __init__(self, workdir: Path, cpus: str | None = None) -> None:
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
                stop_process(proc, timeout=10.0, group=False)
                code = -9
            finally:
                stop_process(proc, timeout=10.0, group=False)
        return code, time.monotonic() - started, children_cpu_seconds() - cpu_before
