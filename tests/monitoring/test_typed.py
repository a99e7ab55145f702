"""Drift and live quality beyond numeric binary models: categorical columns (shares and unseen
values), multiclass predicted classes, regression predictions, and labels per task."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from export.reference import reference_stats
from server.errors import InvalidInput
from server.modelcard import Column, ModelCard, Task, placeholder_card
from server.monitoring import ModelMonitor, MonitorParams, register_monitoring_metrics
from tests.monitoring.conftest import FakeClock
from tests.monitoring.typed import (
    CLASSES,
    class_probabilities,
    predicted_values,
    rows,
    typed_card,
)

PARAMS = MonitorParams(drift_window_rows=5_000, drift_min_rows=500)


@pytest.fixture(scope="module")
def cards() -> dict[Task, ModelCard]:
    return {task: typed_card(task) for task in ("binary", "multiclass", "regression")}


def scores_for(card: ModelCard, X: np.ndarray) -> np.ndarray:
    if card.task == "multiclass":
        return class_probabilities(X)
    if card.task == "regression":
        return predicted_values(X)
    p = 1.0 / (1.0 + np.exp(-(X[:, 1] - 25.0) / 5.0))
    return np.column_stack([1.0 - p, p]).astype(np.float32)


def serve(monitor: ModelMonitor, X: np.ndarray, scores: np.ndarray, batch: int = 64) -> None:
    """Feed rows as the batcher does: per batch, one request per batch (ids ``b{start}``)."""
    for start in range(0, len(X), batch):
        part = slice(start, start + batch)
        monitor.observe(X[part], scores[part], [(f"b{start}", 0, len(X[part]))])


def feature(snapshot: dict, name: str) -> dict:
    return next(f for f in snapshot["features"] if f["name"] == name)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_traffic_like_training_is_calm(
    cards: dict[Task, ModelCard], clock: FakeClock, task: Task
) -> None:
    card = cards[task]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(5_000, seed=1)
    serve(monitor, X, scores_for(card, X))
    snap = monitor.snapshot()
    assert snap["task"] == task
    assert snap["status"] == "ok", snap["features"]
    region = feature(snap, "region")
    assert region["kind"] == "categorical"
    assert region["psi"] < PARAMS.psi_watch
    assert region["unseen_rate"] == 0.0 and region["ks"] is None
    assert snap["scores"]["psi"] < PARAMS.psi_watch


def test_category_shares_shifting_drift_and_name_the_categories(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["binary"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(5_000, seed=2, shares=[0.1, 0.2, 0.3, 0.4])  # training: 0.4, 0.3, 0.2, 0.1
    serve(monitor, X, scores_for(card, X))
    snap = monitor.snapshot()
    region = feature(snap, "region")
    assert region["status"] == "drift" and region["psi"] > PARAMS.psi_drift
    assert feature(snap, "amount")["status"] == "ok"
    shifts = region["largest_shifts"]
    assert {s["category"] for s in shifts[:2]} == {"north", "west"}
    north = next(s for s in shifts if s["category"] == "north")
    assert north["reference_share"] == pytest.approx(0.4, abs=0.02)
    assert north["live_share"] == pytest.approx(0.1, abs=0.02)
    assert snap["top_drifting"][0]["name"] == "region"
    assert snap["status"] == "drift"


@pytest.mark.parametrize(("unseen", "status"), [(0.005, "ok"), (0.03, "watch"), (0.10, "drift")])
def test_unseen_share_alone_raises_drift(
    cards: dict[Task, ModelCard], clock: FakeClock, unseen: float, status: str
) -> None:
    """Known categories keep their training shares; only the share of unseen values grows."""
    card = cards["binary"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(5_000, seed=3, unseen=unseen)
    serve(monitor, X, scores_for(card, X))
    region = feature(monitor.snapshot(), "region")
    assert region["unseen_rate"] == pytest.approx(unseen, abs=0.01)
    assert region["reference_unseen_rate"] == 0.0
    assert region["status"] == status, region


def test_missing_categories_show_in_the_missing_rate(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["binary"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(1_000, seed=4)
    X[::4, 0] = np.nan
    serve(monitor, X, scores_for(card, X))
    region = feature(monitor.snapshot(), "region")
    assert region["missing_rate"] == pytest.approx(0.25)
    assert region["status"] == "drift"  # training had no missing region


def test_multiclass_predicted_class_shift_drifts(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["multiclass"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(5_000, seed=5)  # the same inputs, a model that now favours "high"
    serve(monitor, X, class_probabilities(X, tilt=1.5))
    snap = monitor.snapshot()
    scores = snap["scores"]
    assert scores["of"] == "predicted_class"
    assert scores["status"] == "drift" and scores["psi"] > PARAMS.psi_drift
    assert scores["classes"] == CLASSES
    live, ref = scores["predicted_shares"], scores["reference_predicted_shares"]
    assert sum(live) == pytest.approx(1.0) and sum(ref) == pytest.approx(1.0)
    assert live[2] > ref[2] + 0.2
    assert scores["class_shares"] == pytest.approx(ref)  # the stand-in's labels are its argmax
    assert snap["status"] == "drift"
    assert all(f["status"] == "ok" for f in snap["features"])


def test_regression_prediction_shift_drifts(cards: dict[Task, ModelCard], clock: FakeClock) -> None:
    card = cards["regression"]
    calm = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(5_000, seed=6)
    serve(calm, X, predicted_values(X))
    assert calm.snapshot()["scores"]["status"] == "ok"
    shifted = ModelMonitor(card, PARAMS, clock=clock)
    serve(shifted, X, predicted_values(X, shift=15.0))  # inputs as trained, answers moved
    snap = shifted.snapshot()
    scores = snap["scores"]
    assert scores["of"] == "predicted_value"
    assert scores["status"] == "drift"
    assert scores["ks"] > 0.2 and scores["ks_pvalue"] < 1e-6
    assert len(scores["bin_edges"]) == 9
    assert scores["target_mean"] == card.reference.target_mean
    assert snap["thresholds"]["decision_threshold"] is None


def test_multiclass_feedback_gives_accuracy_and_macro_f1(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["multiclass"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(600, seed=7)
    probabilities = class_probabilities(X)
    serve(monitor, X, probabilities)
    predicted = probabilities.argmax(axis=1)
    rng = np.random.default_rng(7)
    truth = np.where(rng.random(600) < 0.8, predicted, rng.integers(0, 3, 600))
    for i, t in enumerate(truth):
        result = monitor.feedback(request_id=f"b{i - i % 64}", row=i % 64, label=CLASSES[t])
        assert result.label == CLASSES[t]
        assert result.predicted == CLASSES[predicted[i]]
        assert result.score is None and result.predicted_positive is None
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == 600
    assert quality["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert quality["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert quality["weighted_f1"] == pytest.approx(f1_score(truth, predicted, average="weighted"))
    assert [c["class"] for c in quality["per_class"]] == CLASSES
    assert quality["reference"] == {"accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5}
    with pytest.raises(InvalidInput, match="'medium' is not one of the classes"):
        monitor.feedback(request_id="b0", label="medium")
    with pytest.raises(InvalidInput, match="label 1 is not one"):
        monitor.feedback(request_id="b0", label=1)


def test_int_class_labels_take_whole_floats_not_booleans(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["binary"]  # classes [0, 1]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(2, seed=8)
    serve(monitor, X, scores_for(card, X))
    assert monitor.feedback(request_id="b0", label=1.0).label == 1
    for bad in (True, 0.5, "1"):
        with pytest.raises(InvalidInput, match="is not one of the classes"):
            monitor.feedback(request_id="b0", label=bad)


def test_regression_feedback_gives_mae_and_rmse(
    cards: dict[Task, ModelCard], clock: FakeClock
) -> None:
    card = cards["regression"]
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    X = rows(300, seed=9)
    predicted = predicted_values(X)
    serve(monitor, X, predicted)
    target = predicted[:, 0].astype(np.float64) + np.random.default_rng(9).normal(0, 4.0, 300)
    for i, t in enumerate(target):
        result = monitor.feedback(request_id=f"b{i - i % 64}", row=i % 64, label=float(t))
        assert result.predicted == pytest.approx(float(predicted[i, 0]))
    assert monitor.feedback(request_id="b0", row=0, label=round(target[0])).replaced
    quality = monitor.snapshot()["quality"]
    target[0] = round(target[0])  # the replaced label
    assert quality["labels"] == 300 and quality["labels_total"] == 301
    p = predicted[:, 0].astype(np.float64)
    assert quality["mae"] == pytest.approx(mean_absolute_error(target, p))
    assert quality["rmse"] == pytest.approx(math.sqrt(mean_squared_error(target, p)))
    assert quality["mean_error"] == pytest.approx(float(np.mean(p - target)))
    assert quality["reference"] == {"mae": 1.0, "rmse": 1.0}
    for bad in ("12.5", True, math.nan, math.inf):
        with pytest.raises(InvalidInput, match="label"):
            monitor.feedback(request_id="b0", label=bad)


def test_prometheus_per_task(cards: dict[Task, ModelCard], clock: FakeClock) -> None:
    monitors = []
    for task in ("multiclass", "regression"):
        monitor = ModelMonitor(cards[task], PARAMS, clock=clock)
        X = rows(600, seed=10, unseen=0.1)
        serve(monitor, X, scores_for(cards[task], X))
        monitors.append(monitor)
    monitors[0].feedback(request_id="b0", label="low")
    monitors[1].feedback(request_id="b0", label=3.5)
    registry = CollectorRegistry()
    register_monitoring_metrics(registry, lambda: monitors)

    def value(name: str, task: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model": f"typed-{task}", "version": "1", **labels})

    snap = monitors[0].snapshot()
    unseen = value("tabserve_drift_feature_unseen_rate", "multiclass", feature="region")
    assert unseen == feature(snap, "region")["unseen_rate"]
    assert value("tabserve_drift_feature_ks", "multiclass", feature="region") is None
    assert value("tabserve_drift_feature_ks", "multiclass", feature="amount") is not None
    assert value("tabserve_drift_score_psi", "multiclass") == snap["scores"]["psi"]
    for i, label in enumerate(CLASSES):
        live = value(
            "tabserve_predicted_class_share", "multiclass", **{"class": str(label)}, source="live"
        )
        assert live == snap["scores"]["predicted_shares"][i]
    assert value("tabserve_live_quality", "multiclass", metric="accuracy") in (0.0, 1.0)
    assert value("tabserve_live_quality", "multiclass", metric="macro_f1") is not None
    assert value("tabserve_positive_rate", "multiclass", source="live") is None
    mae = value("tabserve_live_quality", "regression", metric="mae")
    assert mae == monitors[1].snapshot()["quality"]["mae"]
    assert value("tabserve_live_quality", "regression", metric="rmse") == mae  # one label
    assert value("tabserve_live_labels", "regression") == 1.0


def test_a_rare_flag_turning_common_drifts(clock: FakeClock) -> None:
    """A boolean column true in 2% of training rows, then in 20% of live rows."""
    columns = [Column(name="gift", kind="boolean"), Column(name="amount")]
    rng = np.random.default_rng(11)

    def flag_rows(n: int, share: float) -> np.ndarray:
        return np.column_stack([rng.random(n) < share, rng.normal(size=n)]).astype(np.float32)

    X = flag_rows(10_000, 0.02)
    outputs = np.full((10_000, 1), 1.0)
    reference = reference_stats(columns, X, np.zeros(10_000), outputs, "regression", [], None)
    card = placeholder_card("flags", columns=columns, task="regression", reference=reference)
    monitor = ModelMonitor(card, PARAMS, clock=clock)
    live = flag_rows(1_000, 0.2)
    serve(monitor, live, np.ones((1_000, 1), dtype=np.float32))
    gift = feature(monitor.snapshot(), "gift")
    assert gift["kind"] == "boolean" and gift["status"] == "drift"
