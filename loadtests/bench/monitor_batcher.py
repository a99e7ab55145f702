"""In process: CPU per one-row predict through the Batcher, with a ModelMonitor and without.

Run: ``taskset -c 0 .venv/bin/python -m loadtests.bench.monitor_batcher [model_dir]`` (default
``models/xgb_small``, latest version). Not a test. Two batchers on the same runner settings, one
with a monitor as its observer, are driven alternately (7 rounds of 20,000 requests each) at
concurrency 1 (one request at a time: every batch is one row) and 64 (64 requests gathered: the
batcher coalesces them); prints the medians of this thread's CPU time per request. No HTTP: this
isolates what monitoring adds to the serving path, with less noise than an end-to-end run.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from server.batcher import Batcher
from server.metrics import ServerMetrics
from server.modelcard import HOLDOUT_FILE, load_card, version_dirs
from server.monitoring import ModelMonitor
from server.runner import Runner

ROUNDS = 7
REQUESTS = 20_000


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/xgb_small")
    vdir = [d for d in version_dirs(model_dir.parent) if d.parent.name == model_dir.name][-1]
    card = load_card(vdir, verify_sha256=False)
    with np.load(vdir / HOLDOUT_FILE) as data:
        X = data["X"][:64].astype(np.float32)
    rows = [np.ascontiguousarray(X[i : i + 1]) for i in range(64)]

    def batcher(observer: ModelMonitor | None) -> Batcher:
        runner = Runner(vdir / card.onnx.file, card)
        runner.warm_up(60.0, 32)
        return Batcher(runner, metrics=ServerMetrics(), max_batch_rows=32, observer=observer)

    async def one_at_a_time(b: Batcher, n: int) -> float:
        deadline = time.monotonic() + 3600
        start = time.thread_time_ns()
        for i in range(n):
            await b.predict(rows[i % 64], deadline=deadline, request_id=f"r{i}")
        return (time.thread_time_ns() - start) / n / 1e3

    async def sixty_four(b: Batcher, n: int) -> float:
        deadline = time.monotonic() + 3600
        start = time.thread_time_ns()
        for k in range(n // 64):
            await asyncio.gather(
                *(b.predict(rows[j], deadline=deadline, request_id=f"r{k}-{j}") for j in range(64))
            )
        return (time.thread_time_ns() - start) / n / 1e3

    async def run() -> None:
        off, on = batcher(None), batcher(ModelMonitor(card))
        off.start()
        on.start()
        drives: list[tuple[str, Callable[[Batcher, int], Awaitable[float]]]] = [
            ("c=1", one_at_a_time),
            ("c=64", sixty_four),
        ]
        for label, drive in drives:
            results: dict[str, list[float]] = {"off": [], "on": []}
            await drive(off, 5_000)
            await drive(on, 5_000)
            for r in range(ROUNDS):
                pairs = [("off", off), ("on", on)]
                for name, b in pairs if r % 2 == 0 else pairs[::-1]:
                    results[name].append(await drive(b, REQUESTS))
            o, n = statistics.median(results["off"]), statistics.median(results["on"])
            print(
                f"{label}: monitoring off {o:.2f} us CPU per request, on {n:.2f} (+{n - o:.2f});"
                f" off {[round(x, 1) for x in results['off']]},"
                f" on {[round(x, 1) for x in results['on']]}"
            )
        await off.stop(1.0)
        await on.stop(1.0)

    asyncio.run(run())


if __name__ == "__main__":
    main()
