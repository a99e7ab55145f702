"""In process: CPU per request of the whole app driven through ASGI, with no HTTP server.

Run: ``taskset -c 0 .venv/bin/python -m loadtests.bench.app_inprocess [model] [repeat|unique]
[TABSERVE_X=V ...]`` (default ``xgb_small repeat``, models from ``models/``). Not a test. The
app (``create_app_from_env``, every default extension) gets one-row predict bodies from the
model's hold-out rows (objects of raw values for a model with string columns), one request per
event-loop iteration: ``repeat`` cycles 64 bodies (after two passes the cache and its response
memo answer them, when the model is cached), ``unique`` sends each row once (every request a
miss; numeric models only). The empty handler of the fast dispatch
(``/bench/floor-asgi``) runs in turn with predict, 5 rounds; prints the median CPU µs per
request of each and their difference: what predict's own code costs, with warm CPU caches and
much less noise than ``tabserve bench`` (which adds HTTP, a load generator and cold caches).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = 5
REQUESTS = 5_000


async def _drive(app: Any, path: str, bodies: list[bytes]) -> float:
    """CPU µs per request over ``bodies``, one per event-loop iteration."""

    async def send(_: Any) -> None:
        pass

    started = time.process_time()
    for body in bodies:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return messages.pop()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)
        await asyncio.sleep(0)
    return (time.process_time() - started) / len(bodies) * 1e6


async def main(model: str, traffic: str) -> None:
    from loadtests.bench.cache import holdout_rows, unique_bodies
    from loadtests.holdout import RowEncoder, read_card
    from server.app import create_app_from_env

    models_dir = Path(os.environ["TABSERVE_MODELS_DIR"])
    rows = holdout_rows(models_dir, model)
    encoder = RowEncoder(read_card(models_dir, model).input)
    if encoder.objects and traffic == "unique":
        raise SystemExit(f"{model} has typed columns: only 'repeat' traffic is supported")
    app = create_app_from_env()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    asgi: Any = app  # driven with plain dicts, as a server would
    lifespan = asyncio.create_task(
        asgi({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    predict = f"/v1/models/{model}/predict"
    if encoder.objects:  # string columns: one object of raw values per row, as clients send
        repeated = [b'{"instances":[' + r + b"]}" for r in encoder.encode(rows[:64])]
    else:
        repeated = [json.dumps({"instances": [r]}).encode() for r in rows[:64].tolist()]
    results: dict[str, list[float]] = {"floor-asgi": [], "predict": []}
    try:
        await _drive(app, predict, repeated * 2)  # warm up (and fill the cache)
        for i in range(ROUNDS):
            if traffic == "unique":
                bodies = unique_bodies(np.asarray(rows), REQUESTS, offset=1 + i * 1000)
            else:
                bodies = (repeated * (REQUESTS // len(repeated) + 1))[:REQUESTS]
            results["floor-asgi"].append(await _drive(app, "/bench/floor-asgi/x", bodies))
            results["predict"].append(await _drive(app, predict, bodies))
        cached = app.state.core.registry.get(model).batcher.cache is not None
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
    floor, pred = (statistics.median(results[k]) for k in ("floor-asgi", "predict"))
    print(f"{model} {traffic}: CPU µs per request, median of {ROUNDS} rounds")
    print(f"  floor-asgi {floor:7.1f}\n  predict    {pred:7.1f}\n  difference {pred - floor:7.1f}")
    print(f"  response cache: {'on' if cached else 'off'} for {model}")
    children = list(app.state.core.metrics.inference._children.values())
    runs, seconds = sum(sum(c.counts) for c in children), sum(c.sum for c in children)
    if runs:
        per_run = seconds / runs * 1e6
        print(f"  ONNX Runtime, µs per run (the server's inference histogram): {per_run:.1f}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if "=" not in a]
    os.environ.setdefault("TABSERVE_MODELS_DIR", "models")
    os.environ.setdefault("TABSERVE_LOG_LEVEL", "warning")
    os.environ["TABSERVE_BENCH_FLOOR_ROUTE"] = "true"
    for kv in (a for a in sys.argv[1:] if "=" in a):
        key, value = kv.split("=", 1)
        os.environ[key] = value
    import uvloop

    uvloop.run(main(args[0] if args else "xgb_small", args[1] if len(args) > 1 else "repeat"))
