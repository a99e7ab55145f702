"""One ONNX Runtime session per model version, run inline on the event loop or in its own thread.

The choice is made per model from its batch-1 cost, measured at warm-up on this machine: a cheap
model (a tree ensemble row costs a few µs) runs inline, because a hop to a thread costs more than
the inference; an expensive one runs in a dedicated single worker thread so the event loop keeps
serving while ONNX Runtime works (``run()`` releases the GIL) -- but only when the process may
use more than one core: pinned to one, the thread cannot run beside the loop. One thread per
model keeps runs of the same session serialised, which a one-intra-op-thread session serves best.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.columns import Codec
from server.errors import InvalidModelCard, ShuttingDown
from server.modelcard import HOLDOUT_FILE, ModelCard

WARMUP_CALLS = 200
"""Batch-1 calls timed at warm-up; the median decides inline versus thread."""


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the core the event loop needs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class Runner:
    """Runs the row matrix (float32 [n, n_columns]) through the model; returns the score matrix
    (float32 [n, n_outputs]: probabilities per class, or a regressor's value)."""

    def __init__(self, onnx_path: Path, card: ModelCard, *, intra_op_threads: int = 1) -> None:
        self.card = card
        self.label = f"{card.name}/{card.version}"
        self._onnx_path = onnx_path
        try:
            self._session = ort.InferenceSession(
                str(onnx_path),
                session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise InvalidModelCard(f"{onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        wanted = (
            {card.input.name} if card.input.layout == "matrix" else set(card.input.feature_names)
        )
        if wanted != inputs:
            raise InvalidModelCard(
                f"{self.label}: the card's ONNX inputs {sorted(wanted)} are not the graph's "
                f"{sorted(inputs)}"
            )
        output = (
            card.outputs.value if card.task == "regression" else card.outputs.probabilities
        ) or ""
        outputs = {o.name for o in self._session.get_outputs()}
        if output not in outputs:
            raise InvalidModelCard(f"{self.label}: ONNX output {output!r} not in {sorted(outputs)}")
        self._codec = Codec(card.input)
        self._plain = card.input.layout == "matrix" and card.input.numeric_only
        self._input_name = card.input.name
        self._output_names = [output]
        self._run_options = ort.RunOptions()
        # The binding under InferenceSession.run: the wrapper re-checks the input names on every
        # call (checked once above) and adds a fallback only other execution providers use.
        # `python -m loadtests.bench.ort_call` on xgb_small at batch 1: 6.2 against 7.9 us
        # with warm CPU caches, 30 against 39 us with cold ones (as between requests in the
        # server), one run. The public API if the binding is absent.
        self._run = getattr(self._session, "_sess", self._session).run
        self._checked = False
        self.n_features = card.input.n_features
        self.n_classes = card.n_outputs
        """Columns of the score matrix: one per class, or one for a regressor's value."""
        self.cost_us: float = float(card.cost.us_batch1)
        """Median batch-1 cost in µs: the card's until :meth:`warm_up` measures it here."""
        self.inline = True
        """Run on the event loop (True) or in this runner's own thread (False)."""
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Blocking inference on float32 rows (the row matrix); the caller picks the thread."""
        feeds = {self._input_name: rows} if self._plain else self._codec.onnx_feeds(rows)
        # One RunOptions for every call: ~0.9 us less per run than letting ORT make one.
        out = self._run(self._output_names, feeds, self._run_options)[0]
        if self._checked:
            return out  # type: ignore[no-any-return]
        return self._check(out, len(rows))

    def _check(self, out: object, n: int) -> np.ndarray:
        """The output must be a float tensor [n, n_classes] (a regressor's [n] is taken as
        [n, 1]); once a run gave float32 [n, k], later runs skip the check (the graph does not
        change; ONNX Runtime returns a fresh array per run)."""
        flat = isinstance(out, np.ndarray) and out.ndim == 1 and self.n_classes == 1
        if flat and isinstance(out, np.ndarray):
            out = out.reshape(-1, 1)
        if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape != (n, self.n_classes):
            raise InvalidModelCard(
                f"{self.label}: output {self._output_names[0]!r} is not a float tensor "
                f"[{n}, {self.n_classes}] (a ZipMap output is not supported)"
            )
        if out.dtype != np.float32:
            return out.astype(np.float32)  # (checked again next time: rare, and cheap enough)
        self._checked = not flat  # a flat output is reshaped on every run
        return out

    def warm_up(self, inline_max_cost_us: float, max_batch_rows: int) -> None:
        """Run the session until its allocations settle, time batch 1, choose inline or thread."""
        ones = self._timing_rows()
        self.run(np.zeros((max(1, max_batch_rows), self.n_features), dtype=np.float32))
        for i in range(20):
            self.run(ones[i % len(ones)])
        samples = []
        for i in range(WARMUP_CALLS):
            one = ones[i % len(ones)]
            start = time.perf_counter()
            self.run(one)
            samples.append(time.perf_counter() - start)
        self.cost_us = statistics.median(samples) * 1e6
        # A worker thread only helps when it can run beside the event loop: on one core it
        # time-slices with the loop and adds the hop (measured: far lower throughput pinned).
        self.inline = self.cost_us < inline_max_cost_us or usable_cpus() < 2
        if not self.inline and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{self.label}")

    def _timing_rows(self) -> list[np.ndarray]:
        """One-row inputs that take the model's real paths: the version's hold-out rows when it
        ships them, else zeros. A zero row follows one path through every tree and flatters the
        cost (xgb_large: ~21 us on zeros, ~58 us on hold-out rows)."""
        zeros = [np.zeros((1, self.n_features), dtype=np.float32)]
        holdout = self._onnx_path.parent / HOLDOUT_FILE
        if not holdout.is_file():
            return zeros
        try:
            with np.load(holdout, allow_pickle=False) as data:
                x = np.asarray(data["X"][:64], dtype=np.float32)
        except (OSError, KeyError, ValueError):
            return zeros
        if x.ndim != 2 or x.shape[1] != self.n_features or len(x) == 0:
            return zeros
        return [np.ascontiguousarray(x[i : i + 1]) for i in range(len(x))]

    async def infer(self, rows: np.ndarray) -> np.ndarray:
        """Inference from the event loop: inline for cheap models, else in the runner's thread."""
        if self._executor is None:
            if self._closed:
                raise ShuttingDown(f"{self.label} is closed")
            return self.run(rows)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, rows)

    def close(self) -> None:
        """Stop the worker thread (after any run in progress); later calls to :meth:`infer` raise
        :class:`ShuttingDown`."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
