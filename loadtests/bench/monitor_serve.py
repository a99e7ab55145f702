"""End to end: throughput of one-row predict with monitoring on versus off, on a real server.

Run: ``.venv/bin/python -m loadtests.bench.monitor_serve [--model xgb_small] [--reps 3]``. Not a
test. It uses ``tabserve bench``'s pieces (``loadtests.bench.serving``): ``tabserve serve``
processes pinned to one core, the load generator (wrk when on PATH, else the built-in asyncio
client) pinned to the other, 64 distinct hold-out rows in rotation, the response cache off.

Both servers (``TABSERVE_MONITORING=false`` and ``true``) run side by side on the same core, idle
but for the one being measured; each repetition measures both, in alternating order, at
concurrency 1 and 64, so both see the same background load and the per-repetition on/off ratio
cancels most of it. It prints every cell, the medians of throughput and of the server's CPU time
per request (CPU seconds / requests). On a shared machine the numbers are noisy: compare medians
over repetitions, not single cells.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from loadtests.bench.serving import (
    ROTATION,
    Cell,
    LoadGen,
    _latest_dir,
    _rows,
    bench_server,
    measure,
)
from server.modelcard import load_card


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.monitor_serve",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("--models-dir", default="models", help="model repository (default models)")
    p.add_argument("--model", default="xgb_small", help="model to serve (default xgb_small)")
    p.add_argument("--reps", type=int, default=3, help="rounds of both cells (default 3)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per cell (default 3)")
    p.add_argument(
        "--concurrency", default="1,64", help="comma-separated connection counts (default 1,64)"
    )
    p.add_argument("--json", type=Path, help="also write every cell here")
    args = p.parse_args()
    models_dir = Path(args.models_dir)
    vdir = _latest_dir(models_dir, args.model)
    card = load_card(vdir, verify_sha256=False)
    rows = _rows(vdir, card.input.n_features, ROTATION)
    bodies = [json.dumps({"instances": [row]}).encode() for row in rows.tolist()]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    kind = "wrk" if shutil.which("wrk") else "python"
    conc = [int(c) for c in args.concurrency.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    cpu_us: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {}
    cells = []
    with tempfile.TemporaryDirectory(prefix="tabserve-monbench-") as tmp:
        workdir = Path(tmp)
        gen = LoadGen(kind, client_cpu, workdir)
        servers = {
            monitoring: bench_server(
                models_dir,
                server_cpu,
                {
                    "TABSERVE_CACHE": "false",
                    "TABSERVE_LOG_LEVEL": "warning",
                    "TABSERVE_MONITORING": monitoring,
                },
                workdir / f"server-{monitoring}.log",
            )
            for monitoring in ("false", "true")
        }
        try:
            for server in servers.values():
                server.start()
            for rep in range(args.reps):
                for c in conc:
                    order = ["false", "true"] if rep % 2 == 0 else ["true", "false"]
                    rps = {}
                    for monitoring in order:
                        cell = measure(
                            servers[monitoring],
                            gen,
                            Cell("predict", args.model, True, c),
                            f"/v1/models/{args.model}/predict",
                            bodies,
                            args.seconds,
                        )
                        cell.notes.append(f"monitoring={monitoring} rep={rep}")
                        cells.append(cell)
                        rps[monitoring] = cell.rps
                        results.setdefault((monitoring, c), []).append(cell.rps)
                        us = cell.server_cpu / cell.rps * 1e6 if cell.rps else float("nan")
                        cpu_us.setdefault((monitoring, c), []).append(us)
                        print(
                            f"rep {rep} monitoring={monitoring:<5} c={c:<3} {cell.rps:>8.0f} req/s"
                            f"  p50 {cell.p50_ms:.3f} ms  p99 {cell.p99_ms:.3f} ms"
                            f"  server cpu {cell.server_cpu:.2f} ({us:.0f} us/request)"
                            f"  errors {cell.errors}",
                            flush=True,
                        )
                    ratios.setdefault(c, []).append(rps["true"] / rps["false"])
        finally:
            for server in servers.values():
                server.stop()
    print(f"\n{args.model}, load generator {kind}, medians of {args.reps} repetitions:")
    for c in conc:
        off = statistics.median(results[("false", c)])
        on = statistics.median(results[("true", c)])
        print(
            f"  c={c:<3} off {off:>8.0f} req/s  on {on:>8.0f} req/s"
            f"  on/off per repetition: median {statistics.median(ratios[c]):.3f}"
            f" {sorted(round(r, 3) for r in ratios[c])}"
            f"  (off {sorted(round(x) for x in results[('false', c)])},"
            f" on {sorted(round(x) for x in results[('true', c)])})"
        )
        off_us = statistics.median(cpu_us[("false", c)])
        on_us = statistics.median(cpu_us[("true", c)])
        print(
            f"        server CPU per request: off {off_us:.1f} us  on {on_us:.1f} us"
            f"  (+{on_us - off_us:.1f} us, on/off {on_us / off_us:.3f})"
        )
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in cells], indent=2))


if __name__ == "__main__":
    main()
