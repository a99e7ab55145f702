"""Distributed Locust (one master, N workers) as background load, started and stopped by PID.

Used by ``loadtests/scale.py``: the master runs headless with no time limit and ``--csv``; the
workers connect to it on a free loopback port. :meth:`DistributedLocust.stop` sends SIGTERM to
the master (which stops its workers and writes its statistics), then to any worker still running,
and reads the "Aggregated" row of the master's CSV.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from loadtests.results import read_locust_stats
from loadtests.serveproc import free_port, stop_process

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class DistributedLocust:
    """``users`` users of ``scenario`` spread over ``workers`` worker processes."""

    def __init__(
        self,
        host: str,
        workdir: Path,
        *,
        workers: int,
        users: int,
        user_rate: float,
        model: str,
        models_dir: Path,
        scenario: str = "SteadyOneRow",
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.port = free_port()
        self.csv_prefix = workdir / "locust"
        common = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--loglevel",
            "WARNING",
        ]
        scenario_args = [
            scenario,
            "--model",
            model,
            "--models-dir",
            str(models_dir),
            "--user-rate",
            f"{user_rate:g}",
            "--scores-out",
            str(workdir / "accuracy.json"),
        ]
        self.master_cmd = [
            *common,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(self.port),
            "--expect-workers",
            str(workers),
            "--headless",
            "--host",
            host,
            "-u",
            str(users),
            "-r",
            str(users),
            "--csv",
            str(self.csv_prefix),
            "--only-summary",
            "--exit-code-on-error",
            "0",
            *scenario_args,
        ]
        self.worker_cmd = [
            *common,
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(self.port),
            *scenario_args,
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, cmd in enumerate([self.master_cmd] + [self.worker_cmd] * self.workers):
            log = (self.workdir / f"locust-{i}.log").open("ab")
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            log.close()

    def stop(self, timeout: float = 20.0) -> dict[str, float] | None:
        """Stop master then workers (SIGTERM, then SIGKILL after ``timeout``); Locust's totals."""
        procs, self.procs = self.procs, []
        for proc in procs:
            stop_process(proc, timeout, group=False)
        # The master writes its CSV files on the way out.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stats = read_locust_stats(self.csv_prefix)
            if stats is not None:
                return stats
            time.sleep(0.1)
        return None
