"""The serving suite of ``tabserve bench``: the request path against its floors, on loopback.

For the small and the large XGBoost model it measures

* (a) the framework floor: an empty Litestar handler (``POST /bench/floor/{name}``, turned on by
  ``TABSERVE_BENCH_FLOOR_ROUTE``) on the same server settings, same bodies; and the empty handler
  on the fast dispatch that predict takes (``/bench/floor-asgi/{name}``, ``server.dispatch``),
  the floor of predict's own path;
* (b) ``POST /v1/models/{name}/predict`` with one row per request, batching on and off;
* (c) ONNX Runtime alone, in-process, at batch 1, 16 and 64 (rows/s): how much batching could
  gain if HTTP cost nothing;
* (d) the Open Inference Protocol with one row per request: ``POST /v2/models/{name}/infer``
  (REST JSON), gRPC ModelInfer (raw contents, as ``tritonclient.grpc`` sends) and the empty gRPC
  call (ServerLive, the floor of the gRPC path), the gRPC load from
  ``loadtests.bench.grpc_load`` (one channel, CONC calls in flight), pinned as the HTTP one;

at concurrency 1 and 64, and prints throughput, p50/p99, the CPU each process used and the ratios
the issue sets targets for. The server is pinned to one core and the load generator to another
(``os.sched_setaffinity``). The load generator is ``wrk`` when it is on PATH, else a built-in
asyncio (uvloop) keep-alive HTTP/1.1 client with pre-encoded requests; the report says which.
The response cache is turned off for the servers (it would measure the cache); every server and
load process is started here and stopped by PID in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from loadtests.bench.grpc_load import FLOOR, FLOOR_REQUESTS, INFER, GrpcLoad, one_row_requests
from loadtests.bench.summary import run_and_summarize
from loadtests.holdout import RowEncoder
from loadtests.http1 import take_response
from loadtests.promscrape import Samples, difference, histogram_quantile, scrape, total
from loadtests.serveproc import ServeProcess, free_port
from server.modelcard import HOLDOUT_FILE, load_card

DEFAULT_MODELS = ("xgb_small", "xgb_large")
FLOORS = (("floor", "/bench/floor"), ("floor-asgi", "/bench/floor-asgi"))
"""The two empty handlers: Litestar's (the framework floor) and the fast dispatch's (the floor
of the path predict takes, ``server.dispatch``)."""
ORT_BATCHES = (1, 16, 64)
ROTATION = 64
"""Distinct one-row bodies (hold-out rows) sent in turn, so no run sees one row over and over."""


@dataclass
class Cell:
    kind: str
    """floor | floor-asgi | predict | infer-v2 | grpc | grpc-floor | open | open-floor | ort"""
    model: str
    batching: bool
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    server_cpu: float = 0.0
    """CPU seconds the server used per wall second during the cell (1.0 = one core busy)."""
    loadgen_cpu: float = 0.0
    open_rate: float = 0.0
    """Open loop: requests per second sent on a fixed schedule (latency counted from each
    request's scheduled time, so a stall delays every request behind it); 0: closed loop."""
    gc_collections: int = 0
    """Garbage collections in the server during the cell (all generations, from its
    ``tabserve_gc_pause_seconds`` histogram; ``server.gcpauses``)."""
    gc_longest_ms: float = 0.0
    """The longest of them, as the upper bound of its histogram bucket (0: none)."""
    notes: list[str] = field(default_factory=list)


# --- processes -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def pinned(cpu: int | None) -> Any:
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return pin


def bench_server(models_dir: Path, cpu: int | None, env: dict[str, str], log: Path) -> ServeProcess:
    """One ``tabserve serve`` process for the bench, pinned to ``cpu``, quiet logs."""
    return ServeProcess(
        models_dir,
        env=env,
        args=["--log-level", "warning"],
        cpus=None if cpu is None else str(cpu),
        log_path=log,
    )


# --- load generators -----------------------------------------------------------------------------


def request_bytes(path: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending pre-encoded requests in rotation: back to back (closed
    loop), or each at its scheduled time (open loop, ``interval_ns`` apart from ``start_ns``).

    Open loop corrects for coordinated omission: when an answer comes after the next request's
    scheduled time, that request's latency runs from its scheduled time, so the requests that
    should have gone out meanwhile (and could not, one at a time on a keep-alive connection)
    count the wait too, and the requests behind it go out back to back until the schedule is
    met again. A request sent late only because the generator's timer fired late (the
    connection was idle) counts from when it was sent, and the schedule restarts from there: the
    rate actually sent is the one printed."""

    def __init__(
        self,
        requests: list[bytes],
        until: float,
        latencies: list[int],
        done: asyncio.Future[None],
        interval_ns: int = 0,
        start_ns: int = 0,
        times: list[tuple[int, int, int]] | None = None,
        conn_id: int = 0,
    ):
        self.requests, self.until, self.latencies, self.done = requests, until, latencies, done
        self.times = times
        """When given: (start, answered, connection) per request, perf_counter ns."""
        self.conn_id = conn_id
        self.next = 0
        self.buf = bytearray()
        self.sent = 0
        self.errors = 0
        self.transport: asyncio.Transport | None = None
        self.interval_ns = interval_ns
        self.scheduled = start_ns

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        if self.interval_ns:
            wait = self.scheduled - time.perf_counter_ns()
            if wait > 0:  # the connection is idle before the request's time: wait for it
                asyncio.get_running_loop().call_later(wait / 1e9, self._send_on_time)
                return
            # The previous answer came after this request's time: the server held it up, and
            # the wait counts (the coordinated-omission correction).
            self._write(self.scheduled)
            return
        self._write(time.perf_counter_ns())

    def _send_on_time(self) -> None:
        # libuv timers have a millisecond's granularity: a sub-millisecond wait fires at once
        # (so wait again: the generator spins on its own core) and a longer one may fire late.
        # That lateness is the generator's, not the server's: the latency starts now, and so
        # does the schedule from here on.
        now = time.perf_counter_ns()
        if now < self.scheduled:
            wait = (self.scheduled - now) / 1e9
            asyncio.get_running_loop().call_later(wait, self._send_on_time)
            return
        self.scheduled = now
        self._write(now)

    def _write(self, start_ns: int) -> None:
        assert self.transport is not None
        self.sent = start_ns
        if self.interval_ns:
            self.scheduled += self.interval_ns
        self.transport.write(self.requests[self.next])
        self.next = (self.next + 1) % len(self.requests)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (status := take_response(self.buf)) is not None:
            if status != 200:
                self.errors += 1
            now = time.perf_counter_ns()
            self.latencies.append(now - self.sent)
            if self.times is not None:
                self.times.append((self.sent, now, self.conn_id))
            if now / 1e9 < self.until:
                self._send()
            else:
                assert self.transport is not None
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _python_load(
    port: int,
    requests: list[bytes],
    concurrency: int,
    seconds: float,
    rate: float = 0.0,
    times: list[tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    """Closed loop, or with ``rate`` > 0 open loop at ``rate`` requests/s over all connections
    (each connection ``rate / concurrency``, their schedules staggered); ``times``: filled with
    (start, answered, connection) per request."""
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    until = time.perf_counter() + seconds
    conns: list[_Conn] = []
    waits: list[asyncio.Future[None]] = []
    interval = round(concurrency / rate * 1e9) if rate > 0 else 0
    first = time.perf_counter_ns() + 50_000_000  # after every connection is open
    for i in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        # Connections start spread evenly over the rotation (with 64 bodies and 64 connections,
        # one each): on a long sequence they must not send the same bodies in lockstep.
        offset = i * len(requests) // concurrency % len(requests)
        conn = _Conn(
            requests[offset:] + requests[:offset],
            until,
            latencies,
            done,
            interval,
            first + i * interval // concurrency,
            times,
            i,
        )
        await loop.create_connection(lambda c=conn: c, "127.0.0.1", port)  # type: ignore[misc]
        conns.append(conn)
        waits.append(done)
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*waits), seconds + 30)
    elapsed = time.perf_counter() - start
    return {
        "latencies_ns": latencies,
        "seconds": elapsed,
        "errors": sum(c.errors for c in conns),
    }


def python_loadgen_main(argv: list[str]) -> int:
    """``python -m loadtests.bench.serving --loadgen PORT CONCURRENCY SECONDS PATH BODIES_FILE
    OUT_FILE [RATE]`` (BODIES_FILE: one JSON body per line, sent in rotation; RATE: open loop at
    that many requests per second)."""
    port, conc, secs, path, bodies_file, out_file, *rest = argv
    rate = float(rest[0]) if rest else 0.0
    bodies = Path(bodies_file).read_bytes().splitlines()
    requests = [request_bytes(path, body, int(port)) for body in bodies]
    load = _python_load(int(port), requests, int(conc), float(secs), rate)
    return run_and_summarize(load, out_file)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("TABSERVE %d %f %d %f %f %f %f\\n", summary.requests,
    summary.duration / 1e6,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency:percentile(99.9) / 1e3, latency.max / 1e3))
end
"""


class LoadGen:
    def __init__(self, kind: str, cpu: int | None, workdir: Path) -> None:
        self.kind, self.cpu, self.workdir = kind, cpu, workdir

    def run(
        self,
        port: int,
        path: str,
        bodies: list[bytes],
        concurrency: int,
        seconds: float,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        """``rate`` > 0: open loop (the built-in client; wrk has no open-loop mode)."""
        body_file = self.workdir / "bodies.jsonl"
        body_file.write_bytes(b"\n".join(bodies) + b"\n")
        wrk = self.kind == "wrk" and not rate
        if wrk:
            script = self.workdir / "bench.lua"
            script.write_text(WRK_SCRIPT.replace("{bodies}", str(body_file)))
            cmd = [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{path}",
            ]
        else:
            out = self.workdir / "result.json"
            cmd = [
                sys.executable,
                "-m",
                "loadtests.bench.serving",
                "--loadgen",
                str(port),
                str(concurrency),
                str(seconds),
                path,
                str(body_file),
                str(out),
                *([str(rate)] if rate else []),
            ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pinned(self.cpu)
        )
        try:
            _children_cpu_delta()  # baseline: forget children waited for before this run
            stdout, stderr = proc.communicate(timeout=seconds + 60)
            cpu = _children_cpu_delta()
            if proc.returncode != 0:
                raise RuntimeError(f"load generator failed: {stderr.decode()[-500:]}")
            if wrk:
                line = next(
                    (x for x in stdout.decode().splitlines() if x.startswith("TABSERVE ")), None
                )
                if line is None:
                    raise RuntimeError(f"unexpected wrk output: {stdout.decode()[-500:]}")
                _, n, secs, errors, p50, p99, p999, worst = line.split()
                result = {
                    "requests": int(n),
                    "seconds": float(secs),
                    "errors": int(errors),
                    "p50_ms": float(p50),
                    "p99_ms": float(p99),
                    "p999_ms": float(p999),
                    "max_ms": float(worst),
                }
            else:
                result = json.loads((self.workdir / "result.json").read_text())
            result["cpu_seconds"] = cpu
            return result
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


_last_children_cpu = 0.0


def _children_cpu_delta() -> float:
    """CPU seconds used by waited-for children since the last call (the load generator)."""
    global _last_children_cpu
    usage = os.times()
    total = usage.children_user + usage.children_system
    delta, _last_children_cpu = total - _last_children_cpu, total
    return delta


# --- ONNX Runtime alone --------------------------------------------------------------------------


def ort_alone(models_dir: Path, name: str, seconds: float, cpu: int | None) -> list[Cell]:
    from server.runner import Runner

    vdir = _latest_dir(models_dir, name)
    card = load_card(vdir)
    runner = Runner(vdir / card.onnx.file, card, intra_op_threads=1)
    rows = _rows(vdir, card.input.n_features, 64)
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    cells = []
    try:
        for batch in ORT_BATCHES:
            inputs = [np.ascontiguousarray(rows[i : i + batch]) for i in range(0, 64, batch)]
            for x in inputs * 2:
                runner.run(x)
            samples: list[int] = []
            cpu0 = time.process_time()
            end = time.perf_counter() + seconds / 2
            i = 0
            while time.perf_counter() < end:
                x = inputs[i % len(inputs)]
                i += 1
                t = time.perf_counter_ns()
                runner.run(x)
                samples.append(time.perf_counter_ns() - t)
            total_s = sum(samples) / 1e9
            cell = Cell("ort", name, False, batch, requests=len(samples), seconds=total_s)
            cell.rps = len(samples) * batch / total_s
            cell.p50_ms = statistics.median(samples) / 1e6
            cell.p99_ms = float(np.percentile(samples, 99)) / 1e6
            cell.server_cpu = (time.process_time() - cpu0) / (seconds / 2)
            cell.notes.append(f"batch {batch}, rows/s")
            cells.append(cell)
    finally:
        os.sched_setaffinity(0, before)
        runner.close()
    return cells


def _v2_body(input_name: str, row: list[float]) -> bytes:
    tensor = {"name": input_name, "shape": [1, len(row)], "datatype": "FP32", "data": row}
    return json.dumps({"inputs": [tensor]}).encode()


def _latest_dir(models_dir: Path, name: str) -> Path:
    versions = [p for p in (models_dir / name).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no versions of {name} in {models_dir}")
    return max(versions, key=lambda p: int(p.name))


def _rows(vdir: Path, n_features: int, n: int) -> np.ndarray:
    holdout = vdir / HOLDOUT_FILE
    if holdout.is_file():
        with np.load(holdout) as data:
            x: np.ndarray = data["X"][:n].astype(np.float32)
            if len(x) == n:
                return x
    return np.random.default_rng(0).normal(size=(n, n_features)).astype(np.float32)


def one_row_bodies(models_dir: Path, model: str) -> list[bytes]:
    """The ``/v1`` bodies of :data:`ROTATION` one-row requests for ``model`` (its latest
    version's hold-out rows), as the serving suite sends them to a numeric model."""
    vdir = _latest_dir(models_dir, model)
    card = load_card(vdir, verify_sha256=False)
    rows = _rows(vdir, card.input.n_features, ROTATION)
    return [json.dumps({"instances": [r]}).encode() for r in rows.tolist()]


# --- the run -------------------------------------------------------------------------------------


class LoadGenerator(Protocol):
    """What :func:`measure` drives: the HTTP load generator or the gRPC one."""

    def run(
        self, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float
    ) -> dict[str, Any]: ...


def measure(
    server: ServeProcess,
    gen: LoadGenerator,
    cell: Cell,
    path: str,
    bodies: list[bytes],
    seconds: float,
    *,
    warm_up: bool = True,
) -> Cell:
    assert server.proc is not None
    if warm_up:
        gen.run(server.port, path, bodies, cell.concurrency, min(1.0, seconds / 3))
    gc0 = gc_samples(server)
    cpu0 = cpu_seconds(server.proc.pid)
    wall0 = time.perf_counter()
    if cell.open_rate:
        assert isinstance(gen, LoadGen)
        result = gen.run(server.port, path, bodies, cell.concurrency, seconds, cell.open_rate)
    else:
        result = gen.run(server.port, path, bodies, cell.concurrency, seconds)
    wall = time.perf_counter() - wall0
    cell.server_cpu = (cpu_seconds(server.proc.pid) - cpu0) / wall
    if gc0 is not None:
        gc1 = gc_samples(server)
        if gc1 is not None:
            cell.gc_collections, cell.gc_longest_ms = gc_pauses(difference(gc0, gc1))
    cell.loadgen_cpu = result["cpu_seconds"] / wall
    cell.requests = result["requests"]
    cell.seconds = result["seconds"]
    cell.rps = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    cell.p50_ms = result["p50_ms"]
    cell.p99_ms = result["p99_ms"]
    cell.p999_ms = result.get("p999_ms", 0.0)
    cell.max_ms = result.get("max_ms", 0.0)
    cell.errors = result["errors"]
    return cell


GC_PAUSES = "tabserve_gc_pause_seconds"


def gc_samples(server: ServeProcess) -> Samples | None:
    """The server's collector histogram (None: not exported, or /metrics did not answer)."""
    try:
        samples = scrape(server.url)
    except OSError:
        return None
    mine = {key: v for key, v in samples.items() if key[0].startswith(GC_PAUSES)}
    return mine or None


def gc_pauses(delta: Samples) -> tuple[int, float]:
    """(collections, upper bound in ms of the longest one's bucket) from a histogram difference
    over all generations (the top quantile's bucket bound)."""
    count = total(delta, f"{GC_PAUSES}_count")
    if not count:
        return 0, 0.0
    longest = histogram_quantile(delta, GC_PAUSES, 1.0, {}) or 0.0
    return int(count), longest * 1000.0


def placement(args: argparse.Namespace) -> tuple[int | None, int | None, str]:
    """(server cpu, load generator cpu, load generator kind)."""
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (
        (cpus[0], cpus[1]) if len(cpus) >= 2 and not args.no_pin else (None, None)
    )
    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    return server_cpu, client_cpu, kind


def run(args: argparse.Namespace) -> dict[str, Any]:
    models_dir = Path(args.models_dir)
    models = [m for m in args.models.split(",") if (models_dir / m).is_dir()]
    missing = [m for m in args.models.split(",") if m not in models]
    if not models:
        raise SystemExit(
            f"tabserve bench: none of {args.models} in {models_dir} (run `make models`)"
        )
    server_cpu, client_cpu, kind = placement(args)
    conc = [int(c) for c in args.concurrency.split(",")]
    bodies: dict[tuple[str, str], list[bytes]] = {}  # (kind of cell, model) -> bodies
    typed: set[str] = set()
    """Models with string or boolean columns: /v1 rows as objects of raw values; their /v2 and
    gRPC cells (one FP32 tensor here) are skipped."""
    for m in models:
        vdir = _latest_dir(models_dir, m)
        card = load_card(vdir, verify_sha256=False)
        rows = _rows(vdir, card.input.n_features, ROTATION)
        encoder = RowEncoder(card.input)
        if encoder.objects:
            typed.add(m)
            bodies["http", m] = [b'{"instances":[' + r + b"]}" for r in encoder.encode(rows)]
        else:  # the very bodies earlier runs sent, so their figures stay comparable
            bodies["http", m] = [json.dumps({"instances": [r]}).encode() for r in rows.tolist()]
        bodies["infer-v2", m] = [_v2_body(card.input.name, row) for row in rows.tolist()]
        bodies["grpc", m] = one_row_requests(m, card.input.name, rows)
        bodies["grpc-floor", m] = FLOOR_REQUESTS
    cells: list[Cell] = []
    base_env = {
        "TABSERVE_CACHE": "false",
        "TABSERVE_LOG_LEVEL": "warning",
        **dict(kv.split("=", 1) for kv in args.env),
    }
    with tempfile.TemporaryDirectory(prefix="tabserve-bench-") as tmp:
        workdir = Path(tmp)
        gen = LoadGen(kind, client_cpu, workdir)
        grpc_port = free_port()
        grpc_gen = GrpcLoad(grpc_port, client_cpu, workdir)
        for batching in (True, False):
            env = {
                **base_env,
                "TABSERVE_BATCHING": str(batching).lower(),
                "TABSERVE_BENCH_FLOOR_ROUTE": "true",
                "TABSERVE_GRPC_PORT": str(grpc_port),
            }
            server = bench_server(models_dir, server_cpu, env, workdir / "server.log")
            try:
                server.start()
                plan = [(what, f"{prefix}/{{m}}") for what, prefix in FLOORS] if batching else []
                plan.append(("predict", "/v1/models/{m}/predict"))
                if batching:
                    plan += [("infer-v2", "/v2/models/{m}/infer"), ("grpc-floor", FLOOR)]
                    plan.append(("grpc", INFER))
                for m in models:
                    for c in conc:
                        # Floors and predict in turn, ``repeat`` rounds: each pair is measured
                        # close in time, and the median round stands for the cell.
                        runs: dict[str, list[Cell]] = {}
                        for _ in range(args.repeat):
                            for what, path in plan:
                                if m in typed and what in ("infer-v2", "grpc"):
                                    continue
                                cell = measure(
                                    server,
                                    grpc_gen if what.startswith("grpc") else gen,
                                    Cell(what, m, batching, c),
                                    path.format(m=m),
                                    bodies.get((what, m)) or bodies["http", m],
                                    args.seconds,
                                )
                                runs.setdefault(what, []).append(cell)
                                _progress(cell)
                        cells.extend(median_cell(samples) for samples in runs.values())
                        if batching and args.open_share > 0 and "predict" in runs:
                            cells.extend(
                                tail_cells(
                                    server, gen, m, c, bodies["http", m], runs["predict"], args
                                )
                            )
            except Exception:
                print((workdir / "server.log").read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                server.stop()
        for m in models:
            cells.extend(ort_alone(models_dir, m, args.seconds, server_cpu))
    return {
        "loadgen": kind,
        "server_cpu": server_cpu,
        "loadgen_cpu": client_cpu,
        "seconds_per_cell": args.seconds,
        "repeat": args.repeat,
        "missing_models": missing,
        "cells": [asdict(c) for c in cells],
        "ratios": ratios(cells),
    }


def tail_cells(
    server: ServeProcess,
    gen: LoadGen,
    model: str,
    concurrency: int,
    bodies: list[bytes],
    closed: list[Cell],
    args: argparse.Namespace,
) -> list[Cell]:
    """One-row predict in open loop at ``args.open_share`` of the closed loop's median req/s,
    ``args.tail_seconds`` per round (enough requests for a p99.9), ``args.repeat`` rounds, and
    the empty handler on predict's path (``floor-asgi``) on the same schedule in alternate
    rounds: the floor's tail is what the machine, the kernel and the HTTP layer give any answer
    at that rate, so predict's tail over it is what predict itself adds. For each, the round
    with the median p99.9 stands for the cell."""
    rate = args.open_share * median_round(closed).rps
    plan = (("open", f"/v1/models/{model}/predict"), ("open-floor", f"/bench/floor-asgi/{model}"))
    samples: dict[str, list[Cell]] = {what: [] for what, _ in plan}
    for _ in range(args.repeat):
        for what, path in plan:
            cell = Cell(what, model, True, concurrency, open_rate=round(rate, 1))
            measure(server, gen, cell, path, bodies, args.tail_seconds, warm_up=False)
            _progress(cell)
            samples[what].append(cell)
    cells = []
    for rounds in samples.values():
        cell = sorted(rounds, key=lambda c: c.p999_ms)[len(rounds) // 2]
        if len(rounds) > 1:
            tails = ", ".join(f"{c.p999_ms:.2f}" for c in rounds)
            cell.notes.append(f"median p99.9 of {len(rounds)} rounds ({tails} ms)")
        cell.notes.append("gc per round: " + "; ".join(_gc_text(c) for c in rounds))
        cells.append(cell)
    return cells


def _gc_text(cell: Cell) -> str:
    if not cell.gc_collections:
        return "none"
    return f"{cell.gc_collections}, longest <= {cell.gc_longest_ms:g} ms"


class _Rated(Protocol):
    rps: float


R = TypeVar("R", bound=_Rated)


def median_round(samples: list[R]) -> R:
    """The round with the median throughput, its latencies and CPU with it (both suites)."""
    return sorted(samples, key=lambda cell: cell.rps)[len(samples) // 2]


def median_cell(samples: list[Cell]) -> Cell:
    """:func:`median_round`, with every round's req/s in its notes."""
    cell = median_round(samples)
    if len(samples) > 1:
        rates = ", ".join(f"{s.rps:.0f}" for s in samples)
        cell.notes.append(f"median of {len(samples)} rounds ({rates} req/s)")
    return cell


def _progress(cell: Cell) -> None:
    print(
        f"  {cell.kind:<10} {cell.model:<10} batching={'on ' if cell.batching else 'off'} "
        f"c={cell.concurrency:<3} {cell.rps:>9.0f} req/s",
        file=sys.stderr,
        flush=True,
    )


def per_cpu_second(cell: Cell) -> float:
    """Requests per second of server CPU: on a shared machine, where the server's core is not
    all its own, throughput per CPU it actually got compares cells run at different moments."""
    return cell.rps / cell.server_cpu if cell.server_cpu else 0.0


def ratios(cells: list[Cell]) -> dict[str, Any]:
    def find(kind: str, model: str, batching: bool, c: int) -> Cell | None:
        for cell in cells:
            if (cell.kind, cell.model, cell.batching, cell.concurrency) == (
                kind,
                model,
                batching,
                c,
            ):
                return cell
        return None

    out: dict[str, Any] = {}
    for model in sorted({c.model for c in cells}):
        for c in (1, 64):
            on = find("predict", model, True, c)
            off = find("predict", model, False, c)
            for kind in ("floor", "floor-asgi"):
                floor = find(kind, model, True, c)
                if not (floor and on and floor.rps):
                    continue
                target = " (target >= 0.8 for xgb_small)" if kind == "floor" else ""
                out[f"{model} c={c}: predict/{kind} throughput{target}"] = round(
                    on.rps / floor.rps, 3
                )
                if on.server_cpu and floor.server_cpu:
                    out[f"{model} c={c}: predict/{kind} requests per server CPU-second"] = round(
                        per_cpu_second(on) / per_cpu_second(floor), 3
                    )
            if on and off and off.rps and c == 64:
                out[f"{model} c=64: batching on/off throughput (target >= 3 for xgb_large)"] = (
                    round(on.rps / off.rps, 2)
                )
                if on.server_cpu and off.server_cpu:
                    out[f"{model} c=64: batching on/off requests per server CPU-second"] = round(
                        per_cpu_second(on) / per_cpu_second(off), 2
                    )
                out[f"{model} c=64: p99 on vs off ms (target: on lower)"] = (
                    round(on.p99_ms, 3),
                    round(off.p99_ms, 3),
                )
            if c == 1:
                b1 = find("ort", model, False, 1)
                for batch in ORT_BATCHES[1:]:
                    bn = find("ort", model, False, batch)
                    if b1 and bn and b1.rps:
                        out[
                            f"{model}: ORT alone rows/s at batch {batch} over batch 1 (the most "
                            "batching can gain with no HTTP at all)"
                        ] = round(bn.rps / b1.rps, 2)
            if on and off and c == 1:
                out[f"{model} c=1: p50 added by batching, us (target <= 50)"] = round(
                    (on.p50_ms - off.p50_ms) * 1000, 1
                )
            tail = find("open", model, True, c)
            if tail and tail.p50_ms:
                where = f"{model} c={c} open loop at {tail.open_rate:.0f} req/s"
                target = " (target <= 3)" if c == 1 else ""
                out[f"{where}: p99/p50{target}"] = round(tail.p99_ms / tail.p50_ms, 2)
                target = " (target <= 5)" if c == 1 else ""
                out[f"{where}: p99.9 ms{target}"] = round(tail.p999_ms, 3)
                out[f"{where}: max ms"] = round(tail.max_ms, 3)
                floor = find("open-floor", model, True, c)
                if floor and floor.p50_ms:
                    # The same schedule to the empty handler: the tail any answer gets here.
                    out[f"{where}: floor-asgi p99/p50, p99.9 ms, max ms"] = (
                        round(floor.p99_ms / floor.p50_ms, 2),
                        round(floor.p999_ms, 3),
                        round(floor.max_ms, 3),
                    )
            grpc = find("grpc", model, True, c)
            for kind in ("infer-v2", "predict"):
                rest = find(kind, model, True, c)
                if grpc and rest and grpc.rps and rest.rps and rest.server_cpu:
                    target = " (target <= 1 at c=64)" if kind == "infer-v2" else ""
                    out[f"{model} c={c}: grpc/{kind} server CPU per request{target}"] = round(
                        (grpc.server_cpu / grpc.rps) / (rest.server_cpu / rest.rps), 2
                    )
    return out


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\ntabserve bench: load generator {report['loadgen']} pinned to cpu "
        f"{report['loadgen_cpu']}, server pinned to cpu {report['server_cpu']}, "
        f"{report['seconds_per_cell']}s per cell, median of {report['repeat']} round(s), one "
        "worker, response cache off"
    )
    if report["missing_models"]:
        print(f"skipped (not in the model repository): {', '.join(report['missing_models'])}")
    header = (
        f"{'what':<10} {'model':<10} {'batching':<8} {'conc':>4} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} {'max ms':>8} {'gc ms':>6} "
        f"{'srv cpu':>7} {'req/cpu-s':>9} {'gen cpu':>7} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for c in report["cells"]:
        what = c["kind"] if c["kind"] != "ort" else f"ort b{c['concurrency']}"
        conc = c["concurrency"] if c["kind"] != "ort" else "-"
        rate = f"{c['rps']:>9.0f}"
        batching = "-" if c["kind"] == "ort" else ("on" if c["batching"] else "off")
        gen = f"{c['loadgen_cpu']:>7.2f}" if c["kind"] != "ort" else f"{'-':>7}"
        per_cpu = c["rps"] / c["server_cpu"] if c["server_cpu"] and c["kind"] != "ort" else 0.0
        per_cpu_text = f"{per_cpu:>9.0f}" if per_cpu else f"{'-':>9}"
        longest = c.get("gc_longest_ms", 0.0)
        gc_text = f"{longest:>6g}" if c.get("gc_collections") else f"{'-':>6}"
        print(
            f"{what:<10} {c['model']:<10} {batching:<8} {conc:>4} {rate} "
            f"{c['p50_ms']:>8.3f} {c['p99_ms']:>8.3f} {c.get('p999_ms', 0.0):>8.3f} "
            f"{c.get('max_ms', 0.0):>8.3f} {gc_text} {c['server_cpu']:>7.2f} {per_cpu_text} "
            f"{gen} {c['errors']:>6}"
        )
    print("(ort rows: rows/s of one session.run loop in-process; p50/p99 per call)")
    print("(open rows: predict sent on a fixed schedule at half the closed loop's req/s, latency")
    print(" from each request's scheduled time: no coordinated omission; median p99.9 of rounds;")
    print(" open-floor: the empty handler on predict's path on the same schedule)")
    print("(gc ms: the server's longest garbage collection in the cell, as the upper bound of its")
    print(" bucket in tabserve_gc_pause_seconds; -: none)")
    print("(req/cpu-s: requests per second of server CPU; srv cpu < 1 at c=64 means the shared")
    print(" machine gave the server less than its core, and raw req/s understates it)")
    rounds = [c for c in report["cells"] if any("rounds" in n for n in c["notes"])]
    rounds = sorted(rounds, key=lambda c: c["kind"].startswith("open"))
    if rounds:
        print("\nrounds (req/s of each round, in order):")
        for c in rounds:
            note = next(n for n in c["notes"] if "rounds" in n)
            on = "on" if c["batching"] else "off"
            print(f"  {c['kind']:<10} {c['model']:<10} {on:<3} c={c['concurrency']:<3} {note}")
            for gc_note in (n for n in c["notes"] if n.startswith("gc per round")):
                print(f"  {'':<10} {'':<10} {'':<3}    {'':<3} {gc_note}")
    print("\nratios:")
    for k, v in report["ratios"].items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    # The built-in load generator runs as its own process (see LoadGen).
    if sys.argv[1:2] != ["--loadgen"]:
        sys.exit("usage: python -m loadtests.bench.serving --loadgen PORT CONC SECS PATH IN OUT")
    sys.exit(python_loadgen_main(sys.argv[2:]))
