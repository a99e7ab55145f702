"""A local HAProxy in front of tabserve replicas: write its config, start, read its stats, stop.

Used by the replica scenarios (``loadtests/scale.py``). The binary is ``haproxy`` from PATH
(Debian: ``apt-get install haproxy``); :func:`find_haproxy_binary` returns None without it, and
callers skip with that reason. The balancer listens on loopback only and is stopped by the PID it
was started with.

The configuration is the one ``deploy/compose/haproxy.cfg`` uses, with fixed server addresses in
place of DNS discovery: a replica gets traffic only while ``GET /health/ready`` answers 200 (checked
every ``check_interval_ms``; two failures take it out, two passes put it back), a connection
refused or reset before any answer is retried once on another replica (predictions are
idempotent), and every answer carries ``X-Served-By: <server name>`` so a client can see which
replica answered.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from loadtests.serveproc import LOOPBACK, free_port, stop_process

SERVED_BY = "X-Served-By"


def find_haproxy_binary() -> str | None:
    return shutil.which("haproxy")


def render_config(
    port: int,
    stats_port: int,
    servers: Sequence[tuple[str, int]],
    *,
    check_interval_ms: int = 1000,
    balance: str = "roundrobin",
) -> str:
    """The HAProxy configuration for ``servers`` (name, port) on loopback."""
    lines = [
        "global",
        "    maxconn 2048",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-keep-alive 5s",
        "    option http-buffer-request",
        "    retries 1",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "",
        "frontend tabserve",
        f"    bind {LOOPBACK}:{port}",
        "    default_backend replicas",
        "",
        "backend replicas",
        f"    balance {balance}",
        "    option httpchk GET /health/ready",
        "    http-check expect status 200",
        f"    default-server inter {check_interval_ms}ms fall 2 rise 2 check",
        f"    http-response set-header {SERVED_BY} %s",
        *(f"    server {name} {LOOPBACK}:{server_port}" for name, server_port in servers),
        "",
        "frontend stats",
        f"    bind {LOOPBACK}:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
        "",
    ]
    return "\n".join(lines)


class HAProxyProcess:
    """One HAProxy process balancing ``servers`` (name, port); ``url`` is its frontend."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        servers: Sequence[tuple[str, int]],
        *,
        check_interval_ms: int = 1000,
        balance: str = "roundrobin",
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.stats_port = free_port()
        self.config = render_config(
            self.port,
            self.stats_port,
            servers,
            check_interval_ms=check_interval_ms,
            balance=balance,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "haproxy.cfg"
        config.write_text(self.config)
        log = self.workdir / "haproxy.log"
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(config)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its config: {check.stderr.decode()[-2000:]}")
        with log.open("ab") as out:
            # -db: stay in the foreground (stopped by this PID), no daemon.
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {log.read_text()}")
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("haproxy did not answer on its stats port") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, dict[str, str]]:
        """The backend's servers, by name: HAProxy's CSV stats row (``status``: UP, DOWN, ...;
        ``scur``: current sessions; ``stot``: sessions so far)."""
        url = f"http://{LOOPBACK}:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "replicas" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def status(self, server: str) -> str:
        """``UP``, ``DOWN``, ``UP 1/2`` (going down), ``DOWN 1/2`` (coming up), ``MAINT``..."""
        return self.stats()[server]["status"]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, 10.0, group=False)
