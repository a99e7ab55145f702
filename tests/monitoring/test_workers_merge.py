"""Several workers' monitors merged: the snapshot over their published states is the snapshot one
monitor would give had it seen every row and every label (``ModelMonitor.state`` / ``snapshot``
with ``peers``; the end-to-end test is ``tests/e2e/test_workers_monitoring.py``)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from server.modelcard import ModelCard, Task
from server.monitoring import ModelMonitor, MonitorParams
from server.monitoring.monitor import PeerState
from tests.monitoring import typed
from tests.monitoring.conftest import FakeClock

PARAMS = MonitorParams(drift_window_rows=4_000, drift_min_rows=200, fold_rows=64)
LABELS_PER_BATCH = 7


def answers(task: Task, X: NDArray[np.float32], shifted: bool) -> NDArray[np.float32]:
    if task == "multiclass":
        return typed.class_probabilities(X, tilt=1.5 if shifted else 0.0)
    if task == "regression":
        return typed.predicted_values(X, shift=8.0 if shifted else 0.0)
    p = 1.0 / (1.0 + np.exp(-(X[:, 1] - (18.0 if shifted else 25.0)) / 5.0))
    return np.column_stack([1.0 - p, p]).astype(np.float32)


def label_of(card: ModelCard, task: Task, scores: NDArray[np.float32], i: int) -> object:
    """A made-up true label for row ``i`` (right about two rows in three)."""
    if task == "regression":
        return float(scores[i, 0]) + (3.0 if i % 3 else -5.0)
    k = len(card.classes)
    predicted = int(scores[i].argmax())
    return card.classes[predicted if i % 3 else (predicted + 1) % k]


def published(monitor: ModelMonitor) -> dict[str, Any]:
    """A state as another worker reads it: through JSON."""
    state: dict[str, Any] = json.loads(json.dumps(monitor.state()))
    return state


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on how the rows were spread over workers."""
    out = {k: v for k, v in snapshot.items() if k not in ("since", "status_since", "workers")}
    out["window"] = {k: v for k, v in snapshot["window"].items() if k not in ("max_rows",)}
    out["quality"] = {k: v for k, v in snapshot["quality"].items() if k != "window"}
    out["observed"] = {
        k: v
        for k, v in snapshot["observed"].items()
        if k not in ("labels_from_other_workers", "feedback_capacity")
    }
    return out


def assert_same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, a, b)
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_two_workers_merged_equal_one_worker_that_saw_everything(
    task: Task, clock: FakeClock
) -> None:
    card = typed.typed_card(task)
    one = ModelMonitor(card, PARAMS, clock=clock)
    workers = [ModelMonitor(card, PARAMS, clock=clock, shared=True) for _ in range(2)]
    rng = np.random.default_rng(5)
    for b in range(40):
        shifted = b >= 20
        X = typed.rows(
            int(rng.integers(1, 30)),
            seed=b,
            shares=[0.1, 0.2, 0.3, 0.4] if shifted else typed.SHARES,
            unseen=0.05 if shifted else 0.0,
            amount_shift=0.4 if shifted else 0.0,
        )
        scores = answers(task, X, shifted)
        request = [(f"r{b}", 0, len(X))]
        one.observe(X, scores, request)
        worker = workers[int(rng.integers(0, 2))]  # whichever worker took the connection
        worker.observe(X, scores, request)
        for i in range(min(LABELS_PER_BATCH, len(X))):
            label = label_of(card, task, scores, i)
            one.feedback(request_id=f"r{b}", row=i, label=label)
            worker.feedback(request_id=f"r{b}", row=i, label=label)
        clock.advance(0.5)
    assert all(w.rows_total > 0 for w in workers)  # both served some

    expected = one.snapshot()
    for me, other in ((0, 1), (1, 0)):
        peer = PeerState("other", published(workers[other]), age_s=0.0)
        merged = workers[me].snapshot([peer], worker="me")
        assert_same(comparable(merged), comparable(expected))
        assert [w["rows"] for w in merged["workers"]] == [
            workers[me].rows_total,
            workers[other].rows_total,
        ]
        # each worker keeps its own window, labels and feedback memory: the capacities add up
        assert merged["window"]["max_rows"] == 2 * PARAMS.drift_window_rows
        assert merged["quality"]["window"] == 2 * PARAMS.quality_window_labels
        assert merged["observed"]["feedback_capacity"] == 2 * PARAMS.feedback_capacity
    assert expected["status"] == "drift"  # the traffic did drift
    assert expected["quality"]["labels"] > 0


def test_a_peer_state_of_another_model_file_is_left_out(clock: FakeClock) -> None:
    card = typed.typed_card("binary")
    other_card = typed.typed_card("binary", seed=1)
    mine = ModelMonitor(card, PARAMS, clock=clock, shared=True)
    theirs = ModelMonitor(other_card, PARAMS, clock=clock, shared=True)
    X = typed.rows(50, seed=0)
    mine.observe(X, answers("binary", X, False), [("a", 0, 50)])
    theirs.observe(X, answers("binary", X, False), [("b", 0, 50)])
    state = published(theirs)
    state["sha256"] = "f" * 64  # another ONNX file under the same name and version
    broken = published(theirs)
    broken["totals"] = broken["totals"][:-1]
    snap = mine.snapshot([PeerState("w2", state, 0.1), PeerState("w3", broken, 0.1)], worker="w1")
    assert snap["window"]["rows"] == 50
    assert snap["observed"]["rows_total"] == 50
    assert [w.get("left_out") for w in snap["workers"]] == [
        None,
        "another model file",
        "another window layout",
    ]


def test_one_worker_snapshot_keeps_its_shape(clock: FakeClock) -> None:
    card = typed.typed_card("multiclass")
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = typed.rows(20, seed=0)
    monitor.observe(X, answers("multiclass", X, False), [("a", 0, 20)])
    snap = monitor.snapshot()
    assert "workers" not in snap
    assert "labels_from_other_workers" not in snap["observed"]
    assert snap["window"]["max_rows"] == PARAMS.drift_window_rows
