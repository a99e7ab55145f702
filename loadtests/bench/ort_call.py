"""In process: one ONNX Runtime call at batch 1, public ``run`` against the binding under it,
with warm CPU caches and with cold ones (as between requests in a server).

Run: ``taskset -c 0 .venv/bin/python -m loadtests.bench.ort_call [model_dir]`` (default
``models/xgb_small``, latest version). Not a test. "Cold" streams 8 MB through the caches before
each call. Prints the median µs per call of each way, alternating rounds (5 of 3,000 calls).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.modelcard import HOLDOUT_FILE, load_card, version_dirs
from server.runner import session_options

ROUNDS = 5
CALLS = 3_000


def main(model_dir: Path) -> None:
    vdir = [d for d in version_dirs(model_dir.parent) if d.parent.name == model_dir.name][-1]
    card = load_card(vdir)
    session = ort.InferenceSession(
        str(vdir / card.onnx.file), session_options(1), providers=["CPUExecutionProvider"]
    )
    with np.load(vdir / HOLDOUT_FILE) as data:
        x = data["X"][:64].astype(np.float32)
    rows = [np.ascontiguousarray(x[i : i + 1]) for i in range(len(x))]
    name, outputs, options = card.input.name, [card.outputs.probabilities], ort.RunOptions()
    junk = np.ones(2_000_000, dtype=np.float32)
    binding = session._sess
    ways: dict[str, Callable[[np.ndarray], object]] = {
        "InferenceSession.run": lambda r: session.run(outputs, {name: r}, options),
        "InferenceSession._sess.run": lambda r: binding.run(outputs, {name: r}, options),
    }
    results: dict[tuple[str, bool], list[float]] = {}
    for _ in range(ROUNDS):
        for cold in (False, True):
            for label, call in ways.items():
                samples = []
                for i in range(CALLS):
                    if cold:
                        junk.sum()
                    r = rows[i % len(rows)]
                    start = time.perf_counter_ns()
                    call(r)
                    samples.append(time.perf_counter_ns() - start)
                results.setdefault((label, cold), []).append(statistics.median(samples) / 1e3)
    print(f"{card.name}/{card.version}: median us per batch-1 call (median of {ROUNDS} rounds)")
    for (label, cold), medians in results.items():
        caches = "cold" if cold else "warm"
        print(f"  {label:<28} {caches} caches  {statistics.median(medians):7.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "models/xgb_small"))
