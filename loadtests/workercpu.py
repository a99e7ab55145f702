"""Server CPU per request with ``--workers 2`` against ``--workers 1``, on the same load.

``python -m loadtests.workercpu`` starts ``tabserve serve`` with one worker, then with two, in
turn for ``--rounds`` rounds, each pinned to core 0 with the load generator (the bench's, from
``loadtests.bench.serving``) on core 1, sends ``--seconds`` of one-row predictions at
``--concurrency`` connections, and prints the server's CPU seconds per request: the CPU of the
whole process tree (supervisor and live workers), which ``tabserve bench`` does not count for
worker processes. The target is two workers within 10% of one (the medians of the rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from loadtests.bench.serving import LoadGen, bench_server
from loadtests.processes import tree_cpu_seconds


def one_cell(
    models_dir: Path,
    workers: int,
    model: str,
    concurrency: int,
    seconds: float,
    workdir: Path,
    pin: bool = True,
) -> dict[str, float]:
    with np.load(models_dir / model / "1" / "holdout.npz") as data:
        rows = np.asarray(data["X"][:512], dtype=np.float32)
    bodies = [json.dumps({"instances": [r.tolist()]}).encode() for r in rows]
    path = f"/v1/models/{model}/predict"
    server = bench_server(
        models_dir,
        0 if pin else None,
        {"TABSERVE_WORKERS": str(workers), "TABSERVE_CACHE": "false"},
        workdir / f"serve-{workers}.log",
    )
    gen = LoadGen("python", 1 if pin else None, workdir)
    server.start()
    try:
        assert server.proc is not None
        gen.run(server.port, path, bodies, concurrency, 1.0)  # warm-up
        cpu0 = tree_cpu_seconds(server.proc.pid)
        wall0 = time.perf_counter()
        result = gen.run(server.port, path, bodies, concurrency, seconds)
        wall = time.perf_counter() - wall0
        cpu = tree_cpu_seconds(server.proc.pid) - cpu0
    finally:
        server.stop()
    requests = max(1, int(result["requests"]))
    return {
        "workers": workers,
        "requests": requests,
        "errors": result["errors"],
        "req_per_s": requests / wall,
        "server_cpu_us_per_request": cpu / requests * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.workercpu", description=__doc__)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--model", default="xgb_small")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--no-pin", action="store_true", help="let server and load generator share both cores"
    )
    args = p.parse_args(argv)
    cells: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="tabserve-workercpu-") as tmp:
        for _ in range(args.rounds):
            for workers in (1, 2):
                cell = one_cell(
                    args.models_dir,
                    workers,
                    args.model,
                    args.concurrency,
                    args.seconds,
                    Path(tmp),
                    pin=not args.no_pin,
                )
                cells.append(cell)
                print(
                    f"workers={workers}  {cell['requests']:>7} requests  "
                    f"{cell['req_per_s']:>7.0f} req/s  errors={cell['errors']:.0f}  "
                    f"server CPU {cell['server_cpu_us_per_request']:.1f} us/request",
                    flush=True,
                )
    median = {
        w: statistics.median(c["server_cpu_us_per_request"] for c in cells if c["workers"] == w)
        for w in (1, 2)
    }
    ratio = median[2] / median[1]
    print(
        f"median server CPU per request: 1 worker {median[1]:.1f} us, 2 workers "
        f"{median[2]:.1f} us: ratio {ratio:.3f} (target <= 1.10)"
    )
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
