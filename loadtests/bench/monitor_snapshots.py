"""The monitoring JSON of a real server after unshifted and after shifted traffic.

Run: ``.venv/bin/python -m loadtests.bench.monitor_snapshots [--model xgb_small] [--rows 3000]
[--out-dir /tmp]``. Not a test. For each of two scenarios it starts a fresh ``tabserve serve`` on
the bundled models (``models/``, response cache off), sends ``--rows`` rows to the model's latest
version as one-row requests (16 in flight), posts the true label of every row to
``/v1/models/{name}/feedback``, and writes ``GET /v1/models/{name}/monitoring`` to
``monitoring_unshifted.json`` / ``monitoring_shifted.json``:

- unshifted: the version's own hold-out rows (``holdout.npz``: X, y);
- shifted: ``export.data.make_fraud(rows, seed=1, shift=1.0)``, the generator's drift knob.

The server is stopped by PID in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from export.data import make_fraud
from loadtests.serveproc import ServeProcess
from server.modelcard import HOLDOUT_FILE, load_card

IN_FLIGHT = 16


async def drive(url: str, model: str, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def predict(i: int) -> None:
            async with gate:
                r = await client.post(
                    f"/v1/models/{model}/predict",
                    json={"instances": X[i : i + 1].tolist()},
                    headers={"X-Request-ID": f"row-{i}"},
                )
                r.raise_for_status()

        async def label(i: int) -> None:
            async with gate:
                r = await client.post(
                    f"/v1/models/{model}/feedback",
                    json={"request_id": f"row-{i}", "label": int(y[i])},
                )
                r.raise_for_status()

        await asyncio.gather(*(predict(i) for i in range(len(X))))
        await asyncio.gather(*(label(i) for i in range(len(X))))
        r = await client.get(f"/v1/models/{model}/monitoring")
        r.raise_for_status()
        snapshot: dict[str, Any] = r.json()
        return snapshot


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench.monitor_snapshots",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="model repository (default models)"
    )
    p.add_argument("--model", default="xgb_small", help="model to drive (default xgb_small)")
    p.add_argument(
        "--rows", type=int, default=3_000, help="rows sent in each scenario (default 3000)"
    )
    p.add_argument(
        "--out-dir", type=Path, default=Path("/tmp"), help="where the JSON files go (default /tmp)"
    )
    args = p.parse_args()
    versions = [d for d in (args.models_dir / args.model).iterdir() if d.name.isdigit()]
    vdir = max(versions, key=lambda d: int(d.name))
    card = load_card(vdir, verify_sha256=False)
    with np.load(vdir / HOLDOUT_FILE) as data:
        holdout = data["X"][: args.rows].astype(np.float32), data["y"][: args.rows]
    X_shift, y_shift, names = make_fraud(args.rows, seed=1, shift=1.0)
    if names != card.input.feature_names:
        raise SystemExit(f"{args.model} does not take the fraud generator's features")
    scenarios = {"unshifted": holdout, "shifted": (X_shift.astype(np.float32), y_shift)}
    for scenario, (X, y) in scenarios.items():
        log = args.out_dir / f"capture-{scenario}.log"
        with ServeProcess(
            args.models_dir.resolve(), env={"TABSERVE_CACHE": "false"}, log_path=log
        ) as server:
            snapshot = asyncio.run(drive(server.url, args.model, X, y))
        out = args.out_dir / f"monitoring_{scenario}.json"
        out.write_text(json.dumps(snapshot, indent=2) + "\n")
        top = ", ".join(f"{f['name']} {f['psi']:.3f}" for f in snapshot["top_drifting"])
        print(f"{scenario}: status {snapshot['status']}; top PSI: {top}; wrote {out}")


if __name__ == "__main__":
    main()
