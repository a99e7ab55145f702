"""Where an open-loop tail comes from: every request's send and answer times, grouped into hold-ups.

Run: ``python -m loadtests.bench.tail_timeline --model xgb_small --concurrency 64 --rounds 3``
(``--env TABSERVE_X=V`` for server settings). Not a test: it prints what one machine did.

It starts a real server pinned to the first core, runs the load itself on the second (the
bench's open-loop generator, ``loadtests.bench.serving``), measures predict's closed-loop rate at
``--concurrency``, then sends open-loop rounds at ``--open-share`` of that rate, to predict and
to the empty handler on predict's path (``floor-asgi``) in turn, recording for every request when
it was due (or sent) and when its answer came. A *hold-up* is a run of requests, in send order,
answered more than ``--slow-ms`` after they were due (default: five times the round's p50, at
least 2 ms), with less than 20 ms between two of them. For each round it prints the
percentiles, the server's CPU, its garbage collections (``tabserve_gc_pause_seconds``), and the
worst hold-ups: when they began, how long late requests kept being sent, how many there were and
on how many connections, the worst latency, and the answers per second while the hold-up lasted
against the schedule's rate. A hold-up on every connection whose answers come at little more than
the schedule's rate is the server (or its core) falling behind and catching up slowly; one on a
few connections is not the server's.

The schedstat sampler is a thread of this process (every 5 ms): it shares the generator's core
and, briefly, its interpreter lock. The server must run one worker (the sampled thread is its
process's main thread, which with ``--workers N`` is the supervisor's).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from loadtests.bench.serving import (
    _python_load,
    cpu_seconds,
    gc_pauses,
    one_row_bodies,
    request_bytes,
)
from loadtests.promscrape import difference, scrape, server_figures
from loadtests.serveproc import ServeProcess

MERGE_NS = 20_000_000
"""Late requests less than this far apart (by send time) belong to one hold-up."""

Times = list[tuple[int, int, int]]
"""(due or sent, answered, connection) per request, perf_counter ns."""


class SchedSampler(threading.Thread):
    """Reads the server's event-loop thread's ``/proc/<pid>/schedstat`` every ``every_s``:
    (perf_counter ns, ns on a CPU, ns runnable but waiting for one) samples. Waiting is the
    kernel's own count of time the thread could have run and another task had the core."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.path = Path(f"/proc/{pid}/schedstat")
        self.every_s = every_s
        self.samples: list[tuple[int, int, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                on_cpu, waiting, _ = map(int, self.path.read_text().split())
            except (OSError, ValueError):
                return
            self.samples.append((time.perf_counter_ns(), on_cpu, waiting))

    def shares(self, began_ns: int, ended_ns: int) -> tuple[float, float] | None:
        """(share of the interval on a CPU, share runnable but waiting), or None when the
        samples do not cover it."""
        inside = [s for s in self.samples if began_ns <= s[0] <= ended_ns]
        if len(inside) < 2:
            return None
        (t0, c0, w0), (t1, c1, w1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0), (w1 - w0) / (t1 - t0)


@dataclass
class Holdup:
    began_ns: int
    last_sent_ns: int
    last_answer_ns: int
    requests: int
    connections: int
    worst_ms: float
    answers_per_s: float


def holdups(times: Times, slow_ns: int, merge_ns: int = MERGE_NS) -> list[Holdup]:
    """The hold-ups in ``times``, in time order (see the module's docstring)."""
    ordered = sorted(times)
    found: list[tuple[int, int, int, int, set[int], int]] = []  # began, last, end, n, conns, worst
    for start, end, conn in ordered:
        latency = end - start
        if latency <= slow_ns:
            continue
        if found and start - found[-1][1] <= merge_ns:
            began, _, last_end, n, conns, worst = found[-1]
            conns.add(conn)
            found[-1] = (began, start, max(last_end, end), n + 1, conns, max(worst, latency))
        else:
            found.append((start, start, end, 1, {conn}, latency))
    answered = sorted(end for _, end, _ in ordered)
    out = []
    for began, last, last_end, n, conns, worst in found:
        span = max(last_end - began, 1)
        inside = bisect.bisect_right(answered, last_end) - bisect.bisect_left(answered, began)
        out.append(Holdup(began, last, last_end, n, len(conns), worst / 1e6, inside / span * 1e9))
    return out


def one_round(
    server: ServeProcess,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    requests = [request_bytes(path, body, server.port) for body in bodies]
    times: Times = []
    assert server.proc is not None
    before = scrape(server.url)
    cpu0, wall0 = cpu_seconds(server.proc.pid), time.perf_counter()
    sched = SchedSampler(server.proc.pid)
    sched.start()
    try:
        result = uvloop.run(_python_load(server.port, requests, concurrency, seconds, rate, times))
    finally:
        sched.stopped.set()
        sched.join()
    wall = time.perf_counter() - wall0
    cpu = (cpu_seconds(server.proc.pid) - cpu0) / wall
    delta = difference(before, scrape(server.url))
    figures = server_figures(delta)
    collections, longest = gc_pauses(delta)
    # Percentiles as the bench's summary computes them (numpy's, interpolated).
    latencies = np.array([end - start for start, end, _ in times], dtype=np.int64) / 1e6
    p50, p99, p999 = np.percentile(latencies, [50, 99, 99.9]) if len(times) else (0.0,) * 3
    return {
        "requests": len(times),
        "rps": len(times) / result["seconds"] if result["seconds"] else 0.0,
        "errors": result["errors"],
        "server_cpu": cpu,
        "gc_collections": collections,
        "gc_longest_ms": longest,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "max_ms": float(latencies.max()) if len(times) else 0.0,
        "mean_batch_rows": figures["mean_batch_rows"],
        "inference_mean_ms": figures["inference_mean_ms"],
        "times": times,
        "sched": sched,
    }


def report(what: str, index: int, r: dict[str, Any], rate: float, slow_ms: float | None) -> None:
    slow = slow_ms if slow_ms is not None else max(2.0, 5 * r["p50_ms"])
    gc = (
        f"{r['gc_collections']} collections, longest <= {r['gc_longest_ms']:g} ms"
        if r["gc_collections"]
        else "no collection"
    )
    print(
        f"{what:<8} round {index}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} p99 "
        f"{r['p99_ms']:.2f} p99.9 {r['p999_ms']:.2f} max {r['max_ms']:.2f} ms; server cpu "
        f"{r['server_cpu']:.2f}; gc: {gc}; errors {r['errors']}"
    )
    if r["mean_batch_rows"]:  # predict: the batches and ONNX Runtime's time per batch
        print(
            f"    batches of {r['mean_batch_rows']:.1f} rows on average, ONNX Runtime "
            f"{r['inference_mean_ms'] * 1000:.1f} us per batch"
        )
    if not r["times"]:
        return
    sched: SchedSampler = r["sched"]
    whole = sched.shares(min(t for t, _, _ in r["times"]), max(t for _, t, _ in r["times"]))
    if whole is not None:
        print(
            f"    the server's event-loop thread: on a CPU {whole[0]:.0%} of the round, runnable "
            f"but waiting for one {whole[1]:.1%}"
        )
    found = holdups(r["times"], int(slow * 1e6))
    if not found:
        print(f"    no request answered later than {slow:.1f} ms")
        return
    t0 = min(start for start, _, _ in r["times"])
    late = sum(h.requests for h in found)
    print(f"    {late} requests later than {slow:.1f} ms, in {len(found)} hold-up(s); the worst:")
    for h in sorted(found, key=lambda h: -h.worst_ms)[:3]:
        during = sched.shares(h.began_ns, h.last_answer_ns)
        cpu = (
            f"; loop thread on a CPU {during[0]:.0%}, waiting for one {during[1]:.0%}"
            if during is not None
            else ""
        )
        print(
            f"    at {(h.began_ns - t0) / 1e6:8.1f} ms: late requests sent for "
            f"{(h.last_sent_ns - h.began_ns) / 1e6:.1f} ms, {h.requests} on {h.connections} "
            f"connection(s), worst {h.worst_ms:.1f} ms, answers {h.answers_per_s:.0f}/s "
            f"while it lasted (schedule {rate:.0f}/s){cpu}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.tail_timeline", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models"))
    )
    p.add_argument("--model", default="xgb_small")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="per open-loop round")
    p.add_argument("--open-share", type=float, default=0.5)
    p.add_argument("--slow-ms", type=float, default=None)
    p.add_argument("--env", action="append", default=[], metavar="TABSERVE_X=V")
    p.add_argument("--json", type=Path, help="also write every round's figures (no times)")
    args = p.parse_args(argv)
    if any(kv.startswith("TABSERVE_WORKERS=") and kv != "TABSERVE_WORKERS=1" for kv in args.env):
        p.error("one worker only: the thread it samples is the server process's main thread")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (str(cpus[0]), cpus[1]) if len(cpus) >= 2 else (None, None)
    bodies = one_row_bodies(args.models_dir, args.model)
    env = {
        "TABSERVE_CACHE": "false",
        "TABSERVE_LOG_LEVEL": "warning",
        "TABSERVE_BENCH_FLOOR_ROUTE": "true",
        **dict(kv.split("=", 1) for kv in args.env),
    }
    plan = (
        ("predict", f"/v1/models/{args.model}/predict"),
        ("floor", f"/bench/floor-asgi/{args.model}"),
    )
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tabserve-tail-") as tmp:
        server = ServeProcess(
            args.models_dir, env=env, cpus=server_cpu, log_path=Path(tmp) / "server.log"
        )
        with server:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            predict = [request_bytes(plan[0][1], body, server.port) for body in bodies]
            uvloop.run(_python_load(server.port, predict, args.concurrency, 1.0))  # warm up
            closed = uvloop.run(_python_load(server.port, predict, args.concurrency, 3.0))
            closed_rps = len(closed["latencies_ns"]) / closed["seconds"]
            rate = args.open_share * closed_rps
            print(
                f"tail timeline: {args.model} at c={args.concurrency}; closed loop "
                f"{closed_rps:.0f} req/s, open-loop rounds at {rate:.0f} req/s, "
                f"{args.seconds:g} s each; server on cpu {server_cpu}, load on cpu {client_cpu}"
            )
            for index in range(args.rounds):
                for what, path in plan:
                    r = one_round(server, path, bodies, args.concurrency, rate, args.seconds)
                    report(what, index, r, rate, args.slow_ms)
                    del r["times"], r["sched"]
                    rounds.append({"what": what, "round": index, **r})
    p999 = {what: [r["p999_ms"] for r in rounds if r["what"] == what] for what, _ in plan}
    print(
        "median p99.9: "
        + ", ".join(f"{what} {statistics.median(v):.2f} ms" for what, v in p999.items() if v)
    )
    if args.json:
        args.json.write_text(json.dumps({"rate": rate, "rounds": rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
