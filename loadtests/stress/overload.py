"""Goodput under overload: answered requests per second as connections grow past capacity.

Starts a real ``tabserve serve`` serving one model (default ``xgb_large``) pinned to one core,
and drives ``POST /v1/models/{model}/predict`` with requests of ``--rows`` rows each, every row
unique over the whole run (so neither the row cache nor the response memo answers), from a
closed-loop keep-alive HTTP/1.1 client pinned to the other core: each connection sends its next
request as soon as the previous one is answered, whatever the status (as ``wrk`` does). Per
connection count it prints goodput (200 answers per second), 503 and 504 per second, and the
p50/p99/max latency of the 200 answers; at the end the ratio goodput(most connections) /
goodput(fewest). With ``--repeat N`` each cell is the median of N runs.

    python -m loadtests.stress.overload --connections 64,256,512 --seconds 10

Loopback only; the server and the load generator are started here and stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from loadtests.http1 import take_response
from loadtests.serveproc import ServeProcess

DEFAULT_CONNECTIONS = (64, 256, 512)


@dataclass
class Cell:
    """One connection count's measurement."""

    connections: int
    seconds: float = 0.0
    goodput: float = 0.0
    """200 answers per second."""
    rps_503: float = 0.0
    rps_504: float = 0.0
    rps_other: float = 0.0
    """Any other status per second (should be 0)."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    """Of the 200 answers."""
    probe_max_ms: float = 0.0
    """Slowest ``GET /health/live`` on a new connection (one every 100 ms during the window):
    how long the server takes to accept and answer anyone while overloaded."""
    server_cpu: float = 0.0
    """Server CPU seconds per wall second (1.0: its core is busy)."""
    loadgen_cpu: float = 0.0
    """Load generator CPU seconds per wall second (near 1.0: it may be the bottleneck)."""


# --- the load generator (a child process, pinned to its own core) --------------------------------


def request_head(path: str, port: int, length: int, deadline_ms: float | None) -> bytes:
    extra = "" if deadline_ms is None else f"X-Deadline-Ms: {deadline_ms:g}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {length}\r\n\r\n"
    ).encode()


class Bodies:
    """Request bodies with every row unique: features 0 and 1 of each row carry a counter
    (low and high part, both exact in float32); the rest come from real rows."""

    def __init__(self, rows: np.ndarray, path: str, port: int, deadline_ms: float | None):
        self.path, self.port, self.deadline_ms = path, port, deadline_ms
        self.n = len(rows)
        # Each row as b'[{a},{b},rest...]' with two placeholders filled per request.
        self.tails = [
            b"," + b",".join(repr(float(v)).encode() for v in row[2:]) + b"]" for row in rows
        ]
        self.counter = 0

    def next(self) -> bytes:
        parts = []
        c = self.counter
        self.counter += 1
        for r, tail in enumerate(self.tails):
            u = c * self.n + r
            parts.append(b"[%d,%d" % (u % 4096, u // 4096) + tail)
        body = b'{"instances":[' + b",".join(parts) + b"]}"
        return request_head(self.path, self.port, len(body), self.deadline_ms) + body


class Conn(asyncio.Protocol):
    """One keep-alive connection: send, read the answer, count it, send the next."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.buf = bytearray()
        self.sent = 0
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter_ns()
        self.transport.write(self.gen.bodies.next())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (status := take_response(self.buf)) is not None:
            now = time.perf_counter_ns()
            self.gen.record(status, now, now - self.sent)
            if now < self.gen.stop_ns:
                self.send()
            else:
                assert self.transport is not None
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class LoadGen:
    """Closed-loop load: ``connections`` connections, counted within the measured window."""

    def __init__(self, bodies: Bodies, warmup_s: float, seconds: float) -> None:
        self.bodies = bodies
        self.warmup_s, self.seconds = warmup_s, seconds
        self.start_ns = self.window_ns = self.stop_ns = 0
        self.status: dict[int, int] = {}
        self.latencies: list[int] = []
        self.seconds_max: dict[int, int] = {}
        """Per second of the window: the slowest 200 answer (ns)."""

    def record(self, status: int, now: int, latency: int) -> None:
        if self.window_ns <= now < self.stop_ns:
            self.status[status] = self.status.get(status, 0) + 1
            if status == 200:
                self.latencies.append(latency)
                second = (now - self.window_ns) // 1_000_000_000
                if latency > self.seconds_max.get(second, 0):
                    self.seconds_max[second] = latency

    async def probe(self, port: int) -> list[float]:
        """Every 100 ms of the window: connect, ``GET /health/live``, read the answer, close;
        the seconds each took (a probe still unanswered at the end counts as the time waited)."""
        times: list[float] = []
        request = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        while time.perf_counter_ns() < self.stop_ns:
            start = time.perf_counter()
            left = (self.stop_ns - time.perf_counter_ns()) / 1e9 + 5.0
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), left
                )
                writer.write(request)
                await asyncio.wait_for(reader.read(), left)
                writer.close()
            except (OSError, TimeoutError):
                pass
            took = time.perf_counter() - start
            if time.perf_counter_ns() >= self.window_ns:
                times.append(took)
            await asyncio.sleep(max(0.0, 0.1 - took))
        return times

    async def run(self, port: int, connections: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(connections):
            conn = Conn(self)
            await loop.create_connection(lambda c=conn: c, "127.0.0.1", port)  # type: ignore[misc]
            conns.append(conn)
        # Start once the server has taken every connection (it may accept them a few at a
        # time): a burst on connections still in its accept queue would time the accept.
        await asyncio.sleep(1.0)
        cpu0 = time.process_time()
        self.start_ns = time.perf_counter_ns()
        self.window_ns = self.start_ns + int(self.warmup_s * 1e9)
        self.stop_ns = self.window_ns + int(self.seconds * 1e9)
        for conn in conns:
            conn.send()
        probes = asyncio.ensure_future(self.probe(port))
        await asyncio.sleep((self.stop_ns - time.perf_counter_ns()) / 1e9)
        cpu = time.process_time() - cpu0
        probe_times = await probes
        # Connections still waiting for an answer are closed: the window is over.
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.wait([c.lost for c in conns], timeout=5)
        return {
            "status": self.status,
            "latencies_ns": self.latencies,
            "max_ms_by_second": [
                round(self.seconds_max.get(s, 0) / 1e6, 1) for s in range(int(self.seconds) + 1)
            ],
            "loadgen_cpu": cpu / (self.warmup_s + self.seconds),
            "probe_max_ms": max(probe_times, default=0.0) * 1000,
        }


def loadgen_main(spec_file: str, out_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text())
    rows = np.array(spec["rows"], dtype=np.float64)
    bodies = Bodies(rows, spec["path"], spec["port"], spec["deadline_ms"])
    gen = LoadGen(bodies, spec["warmup_s"], spec["seconds"])
    load = gen.run(spec["port"], spec["connections"])
    try:
        import uvloop

        result = uvloop.run(load)
    except ImportError:
        result = asyncio.run(load)
    Path(out_file).write_text(json.dumps(result))
    return 0


# --- the driver ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def one_model_repo(models_dir: Path, model: str, workdir: Path) -> Path:
    """A model repository holding only ``model`` (a symlink): the server starts faster and
    serves nothing else."""
    repo = workdir / "models"
    repo.mkdir()
    (repo / model).symlink_to((models_dir / model).resolve())
    return repo


def sample_rows(models_dir: Path, model: str, n: int) -> np.ndarray:
    versions = sorted(
        (p for p in (models_dir / model).iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not versions:
        raise SystemExit(f"no versions of {model} in {models_dir}")
    with np.load(versions[-1] / "holdout.npz", allow_pickle=False) as data:
        x = np.asarray(data["X"][:n], dtype=np.float64)
    if len(x) < n or x.shape[1] < 3:
        raise SystemExit(f"{model} needs at least {n} hold-out rows of 3+ features")
    return x


def measure(
    server: ServeProcess,
    args: argparse.Namespace,
    rows: np.ndarray,
    connections: int,
    workdir: Path,
) -> Cell:
    assert server.pid is not None
    spec = {
        "rows": rows.tolist(),
        "path": f"/v1/models/{args.model}/predict",
        "port": server.port,
        "deadline_ms": args.deadline_ms,
        "connections": connections,
        "warmup_s": args.warmup,
        "seconds": args.seconds,
    }
    spec_file, out_file = workdir / "spec.json", workdir / "result.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "loadtests.stress.overload", "--loadgen", str(spec_file)]
    cmd += [str(out_file)]
    cpu_before = cpu_seconds(server.pid)
    wall = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=(lambda: os.sched_setaffinity(0, {args.loadgen_cpu}))
        if args.loadgen_cpu is not None
        else None,
    )
    try:
        _, stderr = proc.communicate(timeout=args.warmup + args.seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    server_cpu = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - wall)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {stderr.decode()[-800:]}")
    result = json.loads(out_file.read_text())
    if args.verbose:
        print(f"  slowest 200 per second (ms): {result['max_ms_by_second']}", file=sys.stderr)
    status = {int(k): v for k, v in result["status"].items()}
    lat = np.array(result["latencies_ns"], dtype=np.int64) / 1e6
    secs = args.seconds
    other = sum(v for k, v in status.items() if k not in (200, 503, 504))
    cell = Cell(
        connections,
        seconds=secs,
        goodput=status.get(200, 0) / secs,
        rps_503=status.get(503, 0) / secs,
        rps_504=status.get(504, 0) / secs,
        rps_other=other / secs,
        p50_ms=float(np.percentile(lat, 50)) if len(lat) else 0.0,
        p99_ms=float(np.percentile(lat, 99)) if len(lat) else 0.0,
        max_ms=float(lat.max()) if len(lat) else 0.0,
        probe_max_ms=float(result["probe_max_ms"]),
        server_cpu=server_cpu,
        loadgen_cpu=float(result["loadgen_cpu"]),
    )
    # Let the server finish or expire what the closed connections left queued.
    time.sleep(args.pause)
    return cell


def median_cell(cells: list[Cell]) -> Cell:
    """Field-wise median of repeated measurements of one connection count."""
    out = Cell(cells[0].connections, seconds=cells[0].seconds)
    for name in asdict(out):
        if name not in ("connections", "seconds"):
            setattr(out, name, statistics.median(getattr(c, name) for c in cells))
    return out


def per_cpu(cell: Cell) -> float:
    """Goodput per second of server CPU: steadier than goodput when others share the core."""
    return cell.goodput / cell.server_cpu if cell.server_cpu else 0.0


def table(cells: list[Cell], deadline_ms: float) -> str:
    lines = [
        "| connections | goodput 200/s | 503/s | 504/s | other/s | p50 ms | p99 ms | max ms "
        "| probe max ms | server CPU | 200 per CPU-s | loadgen CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c.connections} | {c.goodput:,.0f} | {c.rps_503:,.0f} | {c.rps_504:,.0f} "
            f"| {c.rps_other:,.0f} | {c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.max_ms:.1f} "
            f"| {c.probe_max_ms:.1f} "
            f"| {c.server_cpu:.2f} | {per_cpu(c):,.0f} | {c.loadgen_cpu:.2f} |"
        )
    first, last = cells[0], cells[-1]
    ratio = last.goodput / first.goodput if first.goodput else 0.0
    ratio_cpu = per_cpu(last) / per_cpu(first) if per_cpu(first) else 0.0
    worst_p99 = max(c.p99_ms for c in cells)
    lines.append("")
    lines.append(
        f"goodput({last.connections}) / goodput({first.connections}) = {ratio:.2f} "
        f"(target >= 0.80; per server CPU-second {ratio_cpu:.2f}); "
        f"worst p99 of 200s {worst_p99:.0f} ms (deadline {deadline_ms:g} ms)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.stress.overload",
        description=(
            "Goodput of a real tabserve server (pinned to one core) as closed-loop connections "
            "grow past its capacity: 200/s, 503/s, 504/s and latency of the 200s per "
            "connection count, and the ratio goodput(most) / goodput(fewest)."
        ),
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="xgb_large", help="model to drive (default xgb_large)")
    parser.add_argument("--rows", type=int, default=16, help="rows per request (default 16)")
    parser.add_argument(
        "--connections",
        default=",".join(map(str, DEFAULT_CONNECTIONS)),
        help="comma-separated connection counts, fewest first (default 64,256,512)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per cell (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds before each cell (default 2)"
    )
    parser.add_argument(
        "--pause", type=float, default=3.0, help="idle seconds after each cell (default 3)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; median shown")
    parser.add_argument(
        "--deadline-ms",
        type=float,
        default=None,
        help="X-Deadline-Ms sent with each request (default: the server's, 2000)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core for the server")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="core for the load generator")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="turn the server's cache off (rows are unique either way)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra TABSERVE_* setting for the server (repeatable)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print the slowest 200 of each second too"
    )
    parser.add_argument("--json", type=Path, help="also write the cells to this JSON file")
    parser.add_argument("--loadgen", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.loadgen:
        return loadgen_main(*args.loadgen)
    counts = [int(x) for x in args.connections.split(",") if x.strip()]
    rows = sample_rows(args.models_dir, args.model, args.rows)
    env = {"TABSERVE_LOG_LEVEL": "warning"}
    if args.no_cache:
        env["TABSERVE_CACHE"] = "false"
    env.update(dict(kv.split("=", 1) for kv in args.env))
    runs: dict[int, list[Cell]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="tabserve-overload-") as tmp:
        workdir = Path(tmp)
        repo = one_model_repo(args.models_dir, args.model, workdir)
        for run in range(args.repeat):
            server = ServeProcess(
                repo, env=env, cpus=str(args.server_cpu), log_path=workdir / "server.log"
            )
            server.start()
            try:
                for n in counts:
                    cell = measure(server, args, rows, n, workdir)
                    runs[n].append(cell)
                    print(
                        f"run {run + 1}/{args.repeat} c={n}: {cell.goodput:,.0f} 200/s, "
                        f"{cell.rps_503:,.0f} 503/s, {cell.rps_504:,.0f} 504/s, "
                        f"p99 {cell.p99_ms:.0f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                server.stop()
    cells = [median_cell(runs[n]) for n in counts]
    deadline = 2000.0 if args.deadline_ms is None else args.deadline_ms
    print(
        f"{args.model}, {args.rows} unique rows per request, server on core {args.server_cpu}, "
        f"load generator on core {args.loadgen_cpu}, {args.seconds:g} s per cell"
        + (f", median of {args.repeat} runs" if args.repeat > 1 else "")
    )
    print(table(cells, deadline))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
