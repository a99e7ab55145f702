"""Run ``deploy/compose.yaml`` for real with Podman: ``python -m loadtests.composecheck``.

Brings up the two tabserve replicas, Redis, HAProxy and Prometheus of the compose file with
``podman-compose`` (``pip install podman-compose``), then checks and prints:

- both replicas UP in HAProxy (health checks on ``/health/ready``) and answering through it;
- Prometheus scraping both replicas (DNS service discovery), and every query of the Grafana
  dashboard accepted by that Prometheus, with the number of series each returns;
- a replica killed with SIGKILL under load: failed requests, and how soon HAProxy stops
  sending to it.

Grafana is not started (its provisioning files are checked by ``tests/deploy``). Where no
registry is reachable, the public images the file names are stood in for by images built from
Debian packages (``loadtests/compose/standins.Containerfile``), tagged with the public names for
the run only. The tabserve image is ``--image`` (build it with ``make imagetest`` or
``docker build -f deploy/Dockerfile``). The compose project runs from a temporary copy of
``deploy/`` (with the model repository linked in and a generated admin token), and is taken
down, and the temporary tags removed, when the run ends.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from loadtests.scale import Load, holdout_rows, load_running, wait_for

ROOT = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).with_name("compose") / "standins.Containerfile"
PUBLIC_NAMES = {
    "haproxy": "docker.io/library/haproxy:2.8",
    "redis": "docker.io/library/redis:7.4-alpine",
    "prometheus": "docker.io/prom/prometheus:v3.5.0",
}
SERVICES = ["redis", "tabserve", "lb", "prometheus"]
LB = "http://127.0.0.1:8000"
STATS = "http://127.0.0.1:8404/stats;csv"
PROMETHEUS = "http://127.0.0.1:9090"


def up_replicas() -> list[str]:
    text = httpx.get(STATS, timeout=2).text.lstrip("# ")
    return [
        row["svname"]
        for row in csv.DictReader(io.StringIO(text))
        if row["pxname"] == "replicas"
        and row["svname"].startswith("tabserve")
        and row["status"] == "UP"
    ]


def promql(expr: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(
        PROMETHEUS + "/api/v1/query", params={"query": expr}, timeout=10
    ).json()
    return result


def check(podman: list[str], workdir: Path, models_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ready = wait_for(lambda: _ok(LB + "/health/ready") and len(_up_or_none()) == 2, 180, 1.0)
    out["both_replicas_up_after_s"] = None if ready is None else round(ready, 1)
    if ready is None:
        return out
    scraped = wait_for(lambda: _targets_up() == 2, 60, 1.0)
    out["prometheus_targets_up"] = _targets_up()
    out["prometheus_targets_up_after_s"] = None if scraped is None else round(scraped, 1)
    rows = holdout_rows(models_dir, "xgb_small", 256)
    with httpx.Client(timeout=10) as client:
        for row in rows[:100]:
            client.post(LB + "/v1/models/xgb_small/predict", json={"instances": [row.tolist()]})
    time.sleep(12)  # two scrapes
    dashboard = json.loads(
        (workdir / "deploy" / "compose" / "grafana" / "dashboards" / "tabserve.json").read_text()
    )
    queries, failed, series = 0, [], 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answer = promql(target["expr"].replace("$__rate_interval", "1m"))
            queries += 1
            if answer.get("status") != "success":
                failed.append(f"{panel['title']}: {answer.get('error')}")
            else:
                series += len(answer["data"]["result"])
    out["dashboard_queries"] = queries
    out["dashboard_queries_failed"] = failed
    out["dashboard_series_returned"] = series
    load = Load(LB, "xgb_small", rows, 8)
    with load_running(load) as halt:
        time.sleep(2)
        subprocess.run([*podman, "kill", "-s", "KILL", "tabserve_tabserve_2"], capture_output=True)
        gone = wait_for(lambda: len(_up_or_none()) == 1, 15)
        time.sleep(2)
        halt()
    out["sigkill_requests"] = len(load.answers)
    out["sigkill_failed"] = sum(1 for a in load.answers if a.status != 200)
    out["sigkill_out_of_balancer_after_s"] = None if gone is None else round(gone, 2)
    return out


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _up_or_none() -> list[str]:
    try:
        return up_replicas()
    except (httpx.HTTPError, KeyError):
        return []


def _targets_up() -> int:
    try:
        targets = httpx.get(PROMETHEUS + "/api/v1/targets", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return sum(1 for t in targets["data"]["activeTargets"] if t["health"] == "up")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.composecheck", description=__doc__)
    p.add_argument("--image", default="localhost/tabserve:test", help="the tabserve image")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--base", default="localhost/debian-bookworm-python", help="stand-ins' base")
    p.add_argument(
        "--podman-args",
        default="--runtime runc --cgroup-manager cgroupfs",
        help="global podman arguments (these machines need runc and cgroupfs)",
    )
    p.add_argument(
        "--run-args",
        default="--ulimit nofile=4096:4096 --ulimit nproc=4096:4096",
        help="podman run arguments (these machines allow at most 4096 open files)",
    )
    args = p.parse_args(argv)
    compose_bin = shutil.which("podman-compose")
    if shutil.which("podman") is None or compose_bin is None:
        print("needs podman and podman-compose on PATH (pip install podman-compose)")
        return 2
    podman = ["podman", *shlex.split(args.podman_args)]
    tagged: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tabserve-compose-") as tmp:
        workdir = Path(tmp)
        shutil.copytree(ROOT / "deploy", workdir / "deploy")
        (workdir / "models").symlink_to(args.models_dir.resolve())
        (workdir / "deploy" / "admin-token").write_text(secrets.token_hex(16))
        compose = [
            compose_bin,
            f"--podman-args={args.podman_args}",
            f"--podman-run-args={args.run_args}",
            "-f",
            str(workdir / "deploy" / "compose.yaml"),
        ]
        try:
            for target, public in PUBLIC_NAMES.items():
                if subprocess.run([*podman, "image", "exists", public]).returncode != 0:
                    local = f"localhost/tabserve-standin-{target}"
                    subprocess.run(
                        [
                            "podman",
                            "build",
                            *shlex.split(args.podman_args),
                            "--network",
                            "host",
                            "--ulimit",
                            "nofile=4096:4096",
                            "--target",
                            target,
                            "--build-arg",
                            f"BASE={args.base}",
                            "-t",
                            local,
                            "-f",
                            str(STANDINS),
                            str(STANDINS.parent),
                        ],
                        check=True,
                        capture_output=True,
                    )
                    subprocess.run([*podman, "tag", local, public], check=True)
                    tagged.append(public)
            latest = "localhost/tabserve:latest"  # the compose file's `image: tabserve:latest`
            if subprocess.run([*podman, "image", "exists", latest]).returncode != 0:
                subprocess.run([*podman, "tag", args.image, latest], check=True)
                tagged.append(latest)
            subprocess.run(
                [*compose, "up", "-d", "--no-build", *SERVICES],
                check=True,
                capture_output=True,
                timeout=300,
            )
            results = check(podman, workdir, args.models_dir)
        finally:
            subprocess.run([*compose, "down"], capture_output=True, timeout=300)
            for name in tagged:  # this name only (untag with no name removes every name)
                subprocess.run([*podman, "untag", name, name], capture_output=True)
    for key, value in results.items():
        print(f"  {key:<36} {value}")
    ok = (
        results.get("both_replicas_up_after_s") is not None
        and results.get("prometheus_targets_up") == 2
        and not results.get("dashboard_queries_failed")
        and results.get("sigkill_failed") == 0
        and results.get("sigkill_out_of_balancer_after_s") is not None
    )
    print("compose check passed" if ok else "compose check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
