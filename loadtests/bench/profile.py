"""Where a request's server CPU goes, stage by stage: a profiled server under the bench's load.

    python -m loadtests.bench.profile --model xgb_small --concurrency 64 --seconds 5

starts a real ``tabserve serve`` on core 0 under :mod:`cProfile` (the event-loop thread, where
every request is served), warms it up with the bench's load generator on core 1, profiles
``--seconds`` of one-row ``/v1`` predict requests (SIGUSR1 turns the profiler on and off), writes
the raw statistics (``--out``, for ``python -m pstats`` or snakeviz) and prints, per stage, the
self time per request:

read (the HTTP protocol, parsing), dispatch (routing, request metadata), decode (JSON to rows),
validate (columns, bounds), admission (deadline, room, overload), batch (queueing and forming
batches, futures), onnxruntime (the session call), cache, monitoring, observers (shadow,
prediction log), encode (the answer's JSON), metrics (Prometheus), write (the transport),
event loop (asyncio/uvloop scheduling), gc (the collector's callbacks), other.

A function's self time goes to the stage of the module it is defined in (see :data:`STAGES`),
with the few exceptions :data:`FUNCTIONS` names. cProfile adds a few microseconds per Python
call, so the profiled total is larger than the real CPU per request (printed beside it, from an
unprofiled run of the same load): read the stages' shares, not their absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadtests.bench.serving import LoadGen, cpu_seconds, one_row_bodies
from loadtests.serveproc import ServeProcess

STAGES: list[tuple[str, str]] = [
    # (substring of the function's file or of a builtin's name, stage); first match wins
    ("server/connections.py", "read"),
    ("httptools", "read"),
    ("uvicorn/protocols", "read"),
    ("server/body_bounds.py", "read"),
    ("server/large_bodies.py", "read"),
    ("server/dispatch.py", "dispatch"),
    ("server/request_meta.py", "dispatch"),
    ("server/front_rules.py", "dispatch"),
    ("litestar/", "dispatch"),
    ("server/payload.py", "decode"),
    ("msgspec", "decode"),
    ("server/columns.py", "validate"),
    ("server/input_errors.py", "validate"),
    ("server/ladder.py", "admission"),
    ("server/batcher.py", "batch"),
    ("server/registry.py", "batch"),
    ("server/core.py", "batch"),
    ("onnxruntime", "onnxruntime"),
    ("server/runner.py", "onnxruntime"),
    ("server/cache/", "cache"),
    ("server/monitoring/", "monitoring"),
    ("server/shadow/", "observers"),
    ("server/predlog/", "observers"),
    ("server/extension.py", "observers"),
    ("prometheus_client", "metrics"),
    ("server/metrics.py", "metrics"),
    ("server/http_errors.py", "encode"),
    ("asyncio/", "event loop"),
    ("uvloop", "event loop"),
    ("<built-in method _asyncio", "event loop"),
    ("_contextvars", "event loop"),
    ("gc", "gc"),
    ("numpy", "validate"),
]
FUNCTIONS: dict[str, str] = {
    # function names whose stage is not their module's
    "encode_predict": "encode",
    "encode": "encode",
    "encode_v1": "encode",
    "admit": "admission",
    "_admit": "admission",
    "_check_room": "admission",
    "_slack": "admission",
    "wait_s": "admission",
    "write": "write",
    "writelines": "write",
    "send": "write",
}


def stage_of(file: str, name: str) -> str:
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    where = f"{file} {name}"
    for needle, stage in STAGES:
        if needle in where:
            return stage
    return "other"


# --- the profiled server process -------------------------------------------------------------


def serve_profiled(out: str, argv: list[str], *, with_profiler: bool = True) -> int:
    """Run ``tabserve serve argv``; SIGUSR1 turns on and off the profiler (``with_profiler``)
    and a record of the garbage collector's pauses; at exit the profile goes to ``out`` and the
    pauses to ``out`` + ``.gc.json``."""
    import gc

    from server.serve import main as serve_main

    profiler = cProfile.Profile()
    on = False
    pauses: list[tuple[int, float]] = []  # (generation, seconds)
    started = [0.0]

    def collector(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif on:
            pauses.append((info["generation"], time.perf_counter() - started[0]))

    def toggle(_signum: int, _frame: object) -> None:
        nonlocal on
        if with_profiler:
            if on:
                profiler.disable()
            else:
                profiler.enable()
        on = not on

    gc.callbacks.append(collector)
    signal.signal(signal.SIGUSR1, toggle)
    # uvicorn raises the SIGTERM it stopped on again once it has shut down, through the handler
    # that was there before it: make that an exit, so the statistics below get written.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    try:
        return serve_main(argv)
    finally:
        if on and with_profiler:
            profiler.disable()
        if with_profiler:
            profiler.dump_stats(out)
        Path(out + ".gc.json").write_text(json.dumps(pauses))


class ProfiledServer(ServeProcess):
    """A ServeProcess whose server runs under :func:`serve_profiled`."""

    def __init__(
        self, models_dir: Path, stats: Path, *, with_profiler: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(models_dir, **kwargs)
        self.stats = stats
        self.with_profiler = with_profiler

    def command(self) -> list[str]:
        serve = super().command()
        at = serve.index("serve")
        prefix = serve[: at - 2]  # taskset ..., python
        mode = "--serve" if self.with_profiler else "--serve-gc-only"
        profiled = ["-m", "loadtests.bench.profile", mode, str(self.stats), "--"]
        return [*prefix, *profiled, *serve[at + 1 :]]


# --- driving and reading it ------------------------------------------------------------------


def stages(stats_file: Path, requests: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(µs of self time per request by stage, the top functions by self time per request)."""
    stats = pstats.Stats(str(stats_file))
    by_stage: dict[str, float] = defaultdict(float)
    functions: list[tuple[str, float]] = []
    for (file, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        us = tottime / requests * 1e6
        by_stage[stage_of(file, name)] += us
        functions.append((f"{name} ({Path(file).name if file != '~' else 'builtin'})", us))
    functions.sort(key=lambda f: -f[1])
    return dict(sorted(by_stage.items(), key=lambda kv: -kv[1])), functions[:25]


ROUTES = {
    "predict": "/v1/models/{m}/predict",
    "floor-asgi": "/bench/floor-asgi/{m}",
    "floor": "/bench/floor/{m}",
}
"""What can be profiled: predict, and the bench's empty handlers (its floors, see the serving
suite) with the same body, for the stages predict adds on top of them."""


def profile(
    models_dir: Path,
    model: str,
    concurrency: int,
    seconds: float,
    out: Path,
    env: dict[str, str],
    route: str = "predict",
) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (str(cpus[0]), cpus[1]) if len(cpus) >= 2 else (None, None)
    bodies = one_row_bodies(models_dir, model)
    path = ROUTES[route].format(m=model)
    base = {
        "TABSERVE_CACHE": "false",
        "TABSERVE_LOG_LEVEL": "warning",
        "TABSERVE_BENCH_FLOOR_ROUTE": "true",
        **env,
    }
    with tempfile.TemporaryDirectory(prefix="tabserve-profile-") as tmp:
        work = Path(tmp)
        gen = LoadGen("python", client_cpu, work)
        # the real CPU per request, unprofiled, under the same load; the collector's pauses
        plain_stats = work / "plain.prof"
        plain = ProfiledServer(
            models_dir,
            plain_stats,
            with_profiler=False,
            env=base,
            cpus=server_cpu,
            log_path=work / "plain.log",
        )
        with plain:
            gen.run(plain.port, path, bodies, concurrency, 1.0)
            assert plain.proc is not None
            os.kill(plain.proc.pid, signal.SIGUSR1)
            cpu0 = cpu_seconds(plain.proc.pid)
            result = gen.run(plain.port, path, bodies, concurrency, seconds)
            real_us = (cpu_seconds(plain.proc.pid) - cpu0) / result["requests"] * 1e6
            os.kill(plain.proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
        pauses = json.loads(Path(str(plain_stats) + ".gc.json").read_text())
        server = ProfiledServer(
            models_dir, out, env=base, cpus=server_cpu, log_path=work / "profiled.log"
        )
        with server:
            gen.run(server.port, path, bodies, concurrency, 1.0)  # warm up, unprofiled
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
            profiled = gen.run(server.port, path, bodies, concurrency, seconds)
            os.kill(server.proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
        by_stage, top = stages(out, profiled["requests"])
    return {
        "model": model,
        "route": route,
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": profiled["requests"],
        "real_cpu_us_per_request": real_us,
        "unprofiled_rps": result["requests"] / result["seconds"],
        "profiled_rps": profiled["requests"] / profiled["seconds"],
        "gc": gc_summary(pauses, result["requests"]),
        "stages_us": by_stage,
        "top_functions_us": top,
        "stats_file": str(out),
    }


def gc_summary(pauses: list[tuple[int, float]], requests: int) -> dict[str, Any]:
    """The collector's pauses by generation: count, per request, total and longest."""
    out: dict[str, Any] = {}
    for generation in (0, 1, 2):
        mine = [seconds for g, seconds in pauses if g == generation]
        out[f"gen{generation}"] = {
            "collections": len(mine),
            "per_1000_requests": round(len(mine) / requests * 1000, 2) if requests else 0.0,
            "us_per_request": round(sum(mine) / requests * 1e6, 2) if requests else 0.0,
            "max_ms": round(max(mine) * 1e3, 3) if mine else 0.0,
        }
    return out


def print_profile(report: dict[str, Any]) -> None:
    total = sum(report["stages_us"].values())
    print(
        f"profile: one-row {report['route']} of {report['model']} at c={report['concurrency']}, "
        f"{report['requests']} requests profiled; real server CPU "
        f"{report['real_cpu_us_per_request']:.1f} us/request unprofiled "
        f"({report['unprofiled_rps']:.0f} req/s; {report['profiled_rps']:.0f} profiled)"
    )
    print(f"{'stage':<14}{'us/req':>9}{'share':>8}   (self time under cProfile)")
    for stage, us in report["stages_us"].items():
        print(f"{stage:<14}{us:>9.1f}{us / total:>8.1%}")
    print(f"{'total':<14}{total:>9.1f}")
    print("\ngarbage collector, unprofiled run (pauses by generation):")
    for generation, g in report["gc"].items():
        print(
            f"  {generation}: {g['collections']} collections ({g['per_1000_requests']} per 1000 "
            f"requests), {g['us_per_request']} us/request, longest {g['max_ms']} ms"
        )
    print("\ntop functions (self time, us per request):")
    for name, us in report["top_functions_us"]:
        print(f"  {us:>7.2f}  {name}")
    print(f"\nraw statistics: {report['stats_file']} (python -m pstats, or snakeviz)")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--serve"]:
        return serve_profiled(args_in[1], args_in[3:])
    if args_in[:1] == ["--serve-gc-only"]:
        return serve_profiled(args_in[1], args_in[3:], with_profiler=False)
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.profile", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("TABSERVE_MODELS_DIR", "models"))
    )
    p.add_argument("--model", default="xgb_small")
    p.add_argument("--route", choices=sorted(ROUTES), default="predict")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=Path("profile.prof"))
    p.add_argument("--env", action="append", default=[], metavar="TABSERVE_X=V")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    args = p.parse_args(args_in)
    env = dict(kv.split("=", 1) for kv in args.env)
    report = profile(
        args.models_dir,
        args.model,
        args.concurrency,
        args.seconds,
        args.out.resolve(),
        env,
        args.route,
    )
    print_profile(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
