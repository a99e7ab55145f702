"""How long one hostile request can stall everyone else: a probe beside each hostile body.

Starts a real ``tabserve serve`` on loopback (``ServeProcess``), then for each hostile body
(a million empty rows on /v1 and /v2, deep nesting, huge integers, a body of the most rows a
request may carry, ...) sends it a few times on one connection while two probe threads send
one-row predicts in a loop: one to another model (it shares only the event loop and the core with
the hostile request, so its worst latency is the stall) and one to the same model (which also
waits behind the hostile rows in that model's batcher). Prints, per body, the status the server
answered, how long it took, and each probe's worst latency while it was in flight; the first row
is the probes alone (no hostile request), the floor to compare with.

    python -m loadtests.stress.stall                 # every body, 3 rounds each
    python -m loadtests.stress.stall --only v1-million-empty-rows --rounds 5

The probe and the hostile sender are threads of this process using ``http.client`` (the GIL is
released while they wait on their sockets); pin the server with ``--cpus`` to see one core.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.serveproc import LOOPBACK, ServeProcess

N_FEATURES = 24  # the bundled fraud models (xgb_small, xgb_large, logreg)
ROW = [round(0.5 + i * 1.25, 3) for i in range(N_FEATURES)]
JSON_HEADERS = {"Content-Type": "application/json"}


def _v2(data: str, shape: str = "[1, 24]", extra: str = "") -> bytes:
    tensor = f'{{"name": "input", "shape": {shape}, "datatype": "FP32", "data": {data}}}'
    return f'{{"inputs": [{tensor}]{extra}}}'.encode()


def hostile_bodies(max_rows: int, max_body: int, names: list[str]) -> dict[str, tuple[str, bytes]]:
    """name -> ('v1' or 'v2', body), for a model whose features are ``names``."""
    million = 1_000_000
    deep = 100_000
    digits = "9" * (max_body - 1000)  # the longest number that fits the body limit
    row = json.dumps(ROW)
    obj_row = json.dumps(dict(zip(names, ROW, strict=True)))
    obj_rows = min(max_rows, (max_body - 100) // (len(obj_row) + 2))
    misspelt = json.dumps({name[:-1] + "_": v for name, v in zip(names, ROW, strict=True)})
    most_rows = ", ".join([row] * max_rows)
    over_rows = ", ".join([row] * ((max_body - 100) // (len(row) + 2)))
    return {
        "v1-million-empty-rows": ("v1", b'{"instances": [' + b"[]," * (million - 1) + b"[]]}"),
        "v2-million-empty-rows": ("v2", _v2("[" + "[]," * (million - 1) + "[]]", "[1000000, 0]")),
        "v1-nulls-one-row": ("v1", b'{"instances": [[' + b"null," * (max_body // 6) + b"0]]}"),
        "v1-million-zeros-flat": ("v1", b'{"instances": [[' + b"0," * million + b"0]]}"),
        "v2-million-zeros": ("v2", _v2("[" + "0," * million + "0]", "[1, 1000001]")),
        "v1-deep-nesting": ("v1", b'{"instances": ' + b"[" * deep + b"]" * deep + b"}"),
        "v2-deep-nesting-data": ("v2", _v2("[" * deep + "]" * deep)),
        "v2-deep-nesting-parameters": (
            "v2",
            _v2(row, extra=', "parameters": {"p": ' + "[" * deep + "]" * deep + "}"),
        ),
        "v1-huge-integer": ("v1", ('{"instances": [[' + digits + "]]}").encode()),
        "v2-huge-integer-data": ("v2", _v2("[" + digits + "]")),
        "v2-401-digit-integer": ("v2", _v2("[" + "9" * 401 + ", " + row[1:])),
        "v2-huge-integer-parameters": (
            "v2",
            _v2(row, extra=', "parameters": {"p": ' + digits + "}"),
        ),
        "v2-huge-string-parameters": (
            "v2",
            _v2(row, extra=', "parameters": {"p": "' + "x," * ((max_body - 1000) // 2) + '"}'),
        ),
        "v1-most-rows-allowed": ("v1", ('{"instances": [' + most_rows + "]}").encode()),
        "v2-most-rows-allowed": (
            "v2",
            _v2("[" + most_rows + "]", f"[{max_rows}, {N_FEATURES}]"),
        ),
        "v1-max-body-of-rows": ("v1", ('{"instances": [' + over_rows + "]}").encode()),
        "v1-object-rows-max-body": (
            "v1",
            ('{"instances": [' + ", ".join([obj_row] * obj_rows) + "]}").encode(),
        ),
        "v1-object-rows-misspelt-names": (
            "v1",
            ('{"instances": [' + ", ".join([misspelt] * obj_rows) + "]}").encode(),
        ),
    }


@dataclass
class Probe:
    """One-row predicts in a loop on one keep-alive connection; (start, seconds, status) per
    request (status 0: no answer)."""

    port: int
    path: str
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = json.dumps({"instances": [ROW]}).encode()
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("POST", self.path, body, JSON_HEADERS)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
            self.samples.append((start, time.perf_counter() - start, status))
            if status != 200:
                self.failures[str(status)] = self.failures.get(str(status), 0) + 1
            time.sleep(0.001)
        conn.close()

    def worst_between(self, t0: float, t1: float) -> float:
        """The slowest probe whose flight overlapped [t0, t1], in seconds (answered or not)."""
        return max((d for s, d, _ in self.samples if s < t1 and s + d > t0), default=0.0)

    def wait_for_one_after(self, t: float, timeout: float = 30.0) -> None:
        """Until a probe that started after ``t`` has finished (all before it are recorded)."""
        deadline = time.perf_counter() + timeout
        while not any(s > t for s, _, _ in self.samples[-3:]) and time.perf_counter() < deadline:
            time.sleep(0.005)

    def failed_between(self, t0: float, t1: float) -> int:
        """Probes in flight during [t0, t1] that were not answered 200."""
        return sum(1 for s, d, st in self.samples if s < t1 and s + d > t0 and st != 200)

    def stop(self) -> None:
        self._stop.set()


def feature_names(port: int, model: str) -> list[str]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", f"/v1/models/{model}")
        names: list[str] = json.loads(conn.getresponse().read())["schema"]["feature_names"]
    finally:
        conn.close()
    if len(names) != N_FEATURES:
        raise SystemExit(
            f"{model} has {len(names)} features; the bodies are built for {N_FEATURES}"
        )
    return names


def send(port: int, path: str, body: bytes) -> tuple[int, float]:
    """One request on a fresh connection: (status, seconds). Status 0 when the server closed."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    start = time.perf_counter()
    try:
        conn.request("POST", path, body, JSON_HEADERS)
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        conn.close()
    return status, time.perf_counter() - start


@dataclass
class Row:
    name: str
    size: int
    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    worst_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per probe: the worst latency of each round."""
    non_200: int = 0

    def worst(self, probe: str) -> float:
        return max(self.worst_ms.get(probe, [0.0]))

    def median(self, probe: str) -> float:
        """The median over rounds of the worst latency: robust to one scheduling hiccup of a
        shared machine, while a stall the body causes shows in every round."""
        return statistics.median(self.worst_ms.get(probe, [0.0]))


def measure(
    port: int,
    model: str,
    other_model: str,
    bodies: dict[str, tuple[str, bytes]],
    rounds: int,
    log: Callable[[str], None],
) -> list[Row]:
    """Each body ``rounds`` times, with two probes running: one on ``other_model`` (it shares
    only the event loop and the core with the hostile request: the stall) and one on ``model``
    (it also waits behind the hostile rows in that model's batcher)."""
    probes = {
        "other": Probe(port, f"/v1/models/{other_model}/predict"),
        "same": Probe(port, f"/v1/models/{model}/predict"),
    }
    threads = [threading.Thread(target=p.run, daemon=True) for p in probes.values()]
    for thread in threads:
        thread.start()
    rows: list[Row] = []
    try:
        time.sleep(0.5)  # warm the probes' connections
        idle = Row("(probes alone)", 0)
        for _ in range(max(rounds, 5)):  # windows about as long as a hostile request
            t0 = time.perf_counter()
            time.sleep(0.1)
            t1 = time.perf_counter()
            for key, probe in probes.items():
                idle.worst_ms.setdefault(key, []).append(probe.worst_between(t0, t1) * 1e3)
        rows.append(idle)
        for name, (version, body) in bodies.items():
            path = f"/{version}/models/{model}/" + ("predict" if version == "v1" else "infer")
            row = Row(name, len(body))
            for _ in range(rounds):
                time.sleep(0.1)
                t0 = time.perf_counter()
                status, seconds = send(port, path, body)
                t1 = time.perf_counter()
                for probe in probes.values():  # a probe held by the request finishes first
                    probe.wait_for_one_after(t1)
                row.statuses.append(status)
                row.seconds.append(seconds)
                for key, probe in probes.items():
                    row.worst_ms.setdefault(key, []).append(probe.worst_between(t0, t1) * 1e3)
                    row.non_200 += probe.failed_between(t0, t1)
            per_round = " ".join(f"{ms:.0f}" for ms in row.worst_ms["other"])
            log(f"{name}: statuses {row.statuses}, stall per round (ms) {per_round}")
            rows.append(row)
    finally:
        for probe in probes.values():
            probe.stop()
        for thread in threads:
            thread.join(timeout=30)
    for key, probe in probes.items():
        if probe.failures:
            log(f"probe on the {key} model: requests not answered 200 {probe.failures}")
    return rows


def print_table(rows: list[Row], target_ms: float) -> None:
    print(
        f"{'hostile body':<32}{'bytes':>10}  {'status':<7}{'answered':>9}{'stall':>7}"
        f"{'max':>7}{'same model':>11}{'non-200':>8}"
    )
    print("-" * 91)
    for r in rows:
        statuses = ",".join(sorted({str(s) for s in r.statuses})) or "-"
        answered = f"{statistics.median(r.seconds) * 1e3:.1f}" if r.seconds else "-"
        stall = r.median("other")
        flag = "  over target" if stall > target_ms and r.size else ""
        print(
            f"{r.name:<32}{r.size or '':>10}  {statuses:<7}{answered:>9}{stall:>7.1f}"
            f"{r.worst('other'):>7.1f}{r.worst('same'):>11.1f}{r.non_200:>8}{flag}"
        )
    worst = max((r.median("other") for r in rows if r.size), default=0.0)
    print(f"\nworst stall beside any hostile body: {worst:.1f} ms (target <= {target_ms:g} ms)")
    print(
        "answered: the hostile request's median ms over the rounds. stall: the slowest one-row\n"
        "predict on another model in flight while it was, median over the rounds (max: the\n"
        "slowest of all rounds); same model: the slowest on the hostile request's model, which\n"
        "also queues behind its rows; non-200: probes refused meanwhile (503: that model's queue\n"
        "was full). The first row: the probes' worst in windows of 0.1 s with no hostile\n"
        "request, the noise floor of this machine at the time."
    )


async def loop_gaps(
    models_dir: Path, model: str, only: list[str] | None, rounds: int, env: dict[str, str]
) -> None:
    """In process (``--in-process``): the app in this event loop, each body sent over ASGI while
    a task that only yields records the longest the loop went without running it. That is the
    event-loop stall itself, without the network, the probes or the other processes' noise."""
    import httpx

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(
        models_dir=models_dir,
        max_request_rows=int(env["TABSERVE_MAX_REQUEST_ROWS"]),
        max_body_bytes=int(env["TABSERVE_MAX_BODY_BYTES"]),
        cache=False,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    print(
        f"{'hostile body':<32}{'bytes':>10}  {'status':<7}{'answered':>9}{'loop gap':>9}{'max':>7}"
    )
    print("-" * 76)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://s") as client,
    ):
        schema = (await client.get(f"/v1/models/{model}")).json()["schema"]
        bodies = hostile_bodies(
            int(env["TABSERVE_MAX_REQUEST_ROWS"]),
            int(env["TABSERVE_MAX_BODY_BYTES"]),
            schema["feature_names"],
        )
        for name, (version, body) in bodies.items():
            if only and name not in only:
                continue
            path = f"/{version}/models/{model}/" + ("predict" if version == "v1" else "infer")
            statuses, answered, worst = [], [], []
            for _ in range(rounds):
                gaps.clear()
                tick = asyncio.create_task(ticker())
                await asyncio.sleep(0)
                t0 = time.perf_counter()
                r = await client.post(path, content=body, headers=JSON_HEADERS)
                answered.append(time.perf_counter() - t0)
                await asyncio.sleep(0)
                tick.cancel()
                statuses.append(r.status_code)
                worst.append(max(gaps, default=0.0) * 1e3)
            shown = ",".join(sorted({str(s) for s in statuses}))
            print(
                f"{name:<32}{len(body):>10}  {shown:<7}{statistics.median(answered) * 1e3:>9.1f}"
                f"{statistics.median(worst):>9.1f}{max(worst):>7.1f}"
            )
    print(
        "\nloop gap: the longest the event loop went without a turn while the request ran, ms,\n"
        "median over the rounds (max: the longest of all); answered: the request's ms."
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.stress.stall",
        description=(
            "Measure how long one hostile request stalls a concurrent probe: starts a server on "
            "loopback, sends each hostile body while one-row predicts run beside it, and prints "
            "the worst probe latency per body."
        ),
    )
    p.add_argument(
        "--models-dir",
        default=os.environ.get("TABSERVE_MODELS_DIR", "models"),
        help="model repository to serve (default: $TABSERVE_MODELS_DIR or ./models)",
    )
    p.add_argument("--model", default="xgb_small", help="model the hostile bodies go to")
    p.add_argument("--other-model", default="logreg", help="model of the stall probe (not --model)")
    p.add_argument("--rounds", type=int, default=5, help="times each hostile body is sent")
    p.add_argument("--only", action="append", help="run only this body (repeatable)")
    p.add_argument("--list", action="store_true", help="list the hostile bodies and exit")
    p.add_argument("--cpus", default=None, help="pin the server with taskset -c CPUS (e.g. 0)")
    p.add_argument("--max-rows", type=int, default=10_000, help="TABSERVE_MAX_REQUEST_ROWS")
    p.add_argument(
        "--max-body-bytes", type=int, default=4 * 1024 * 1024, help="TABSERVE_MAX_BODY_BYTES"
    )
    p.add_argument("--target-ms", type=float, default=50.0, help="worst stall allowed, ms")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the app in this process and print the longest event-loop gap per body "
        "(no server process, no probes)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    placeholder = [f"feature_{i}" for i in range(N_FEATURES)]
    every = hostile_bodies(args.max_rows, args.max_body_bytes, placeholder)
    if args.list:
        for name, (version, body) in every.items():
            print(f"{name:<32} {version} {len(body):>9} bytes")
        return 0
    unknown = sorted(set(args.only or ()) - set(every))
    if unknown:
        print(f"unknown bodies {unknown}; --list shows them")
        return 2
    env = {
        "TABSERVE_MAX_REQUEST_ROWS": str(args.max_rows),
        "TABSERVE_MAX_BODY_BYTES": str(args.max_body_bytes),
        "TABSERVE_CACHE": "false",
    }
    if args.in_process:
        asyncio.run(loop_gaps(Path(args.models_dir), args.model, args.only, args.rounds, env))
        return 0
    with ServeProcess(Path(args.models_dir), env=env, cpus=args.cpus) as server:
        names = feature_names(server.port, args.model)
        bodies = hostile_bodies(args.max_rows, args.max_body_bytes, names)
        if args.only:
            bodies = {k: v for k, v in bodies.items() if k in args.only}
        rows = measure(
            server.port,
            args.model,
            args.other_model,
            bodies,
            args.rounds,
            lambda line: print(line, flush=True),
        )
    print()
    print_table(rows, args.target_ms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
