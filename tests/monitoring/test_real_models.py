"""The monitor on real exported models: hold-out traffic stays calm, shifted traffic drifts.

Uses the session ``model_repo`` (logreg and xgb_small, trained on unshifted fraud data by the
real export pipeline) and runs their ONNX files for the scores, as the server would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.data import SHIFTED_FEATURES, make_fraud
from server.modelcard import ModelCard, MulticlassMetrics, RegressionMetrics, load_card
from server.monitoring import ModelMonitor, MonitorParams
from server.runner import Runner

PARAMS = MonitorParams(drift_min_rows=500)


def load(model_repo: Path, name: str) -> tuple[ModelCard, ort.InferenceSession, Path]:
    version_dir = model_repo / name / "1"
    card = load_card(version_dir)
    session = ort.InferenceSession(
        str(version_dir / card.onnx.file), providers=["CPUExecutionProvider"]
    )
    return card, session, version_dir


def serve(monitor: ModelMonitor, card: ModelCard, session: ort.InferenceSession, X: np.ndarray):
    for start in range(0, len(X), 64):
        rows = np.ascontiguousarray(X[start : start + 64], dtype=np.float32)
        (scores,) = session.run([card.outputs.probabilities], {card.input.name: rows})
        monitor.observe(rows, np.asarray(scores, dtype=np.float32), [(f"b{start}", 0, len(rows))])


@pytest.mark.parametrize("name", ["logreg", "xgb_small"])
def test_holdout_calm_and_shifted_traffic_drifts(model_repo: Path, name: str) -> None:
    card, session, version_dir = load(model_repo, name)
    holdout = np.load(version_dir / "holdout.npz")

    calm = ModelMonitor(card, PARAMS)
    serve(calm, card, session, holdout["X"])
    snap = calm.snapshot()
    assert snap["window"]["rows"] == len(holdout["X"])
    assert snap["status"] == "ok", snap["top_drifting"]
    assert max(f["psi"] for f in snap["features"]) < PARAMS.psi_watch
    assert snap["scores"]["psi"] < PARAMS.psi_watch

    shifted = ModelMonitor(card, PARAMS)
    X, _, _ = make_fraud(2_000, seed=99, shift=1.0)
    serve(shifted, card, session, X)
    snap = shifted.snapshot()
    drifting = {f["name"] for f in snap["features"] if f["status"] == "drift"}
    calm_features = [f for f in snap["features"] if f["name"] not in SHIFTED_FEATURES]
    assert drifting == set(SHIFTED_FEATURES)
    assert max(f["psi"] for f in calm_features) < PARAMS.psi_watch
    assert snap["status"] == "drift"
    assert snap["scores"]["positive_rate"] > snap["scores"]["reference_positive_rate"]


@pytest.mark.parametrize("name", ["logreg", "xgb_small"])
def test_holdout_labels_reproduce_the_cards_test_metrics(model_repo: Path, name: str) -> None:
    """The hold-out is the card's test split: labelling every row gives the card's metrics."""
    card, session, version_dir = load(model_repo, name)
    holdout = np.load(version_dir / "holdout.npz")
    monitor = ModelMonitor(card, PARAMS)
    serve(monitor, card, session, holdout["X"])
    for i, label in enumerate(holdout["y"]):
        monitor.feedback(request_id=f"b{i - i % 64}", row=i % 64, label=int(label))
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == len(holdout["y"])
    for metric in ("precision", "recall", "f1", "brier"):
        assert quality[metric] == pytest.approx(getattr(card.metrics, metric), abs=1e-6), metric
    assert quality["observed_positive_rate"] == pytest.approx(card.metrics.positive_rate_test)


TYPED_MODELS = ["pricing_sklearn", "pricing_xgb", "returns_sklearn", "returns_xgb"]


@pytest.mark.parametrize("name", TYPED_MODELS)
def test_typed_holdout_is_calm_and_its_labels_give_the_cards_metrics(
    model_repo: Path, name: str
) -> None:
    """Bundled typed models (string columns; regression and multiclass) served by the Runner:
    hold-out traffic raises no drift, and labelling every hold-out row gives the card's test
    metrics (MAE/RMSE, or accuracy/macro-F1)."""
    version_dir = model_repo / name / "1"
    card = load_card(version_dir)
    runner = Runner(version_dir / card.onnx.file, card)
    with np.load(version_dir / "holdout.npz") as data:
        X, y = data["X"].astype(np.float32), data["y"]
    monitor = ModelMonitor(card, MonitorParams(drift_min_rows=len(X)))
    for start in range(0, len(X), 64):
        rows = np.ascontiguousarray(X[start : start + 64])
        monitor.observe(rows, runner.run(rows), [(f"b{start}", 0, len(rows))])
    snap = monitor.snapshot()
    assert snap["task"] == card.task
    assert snap["status"] == "ok", (snap["top_drifting"], snap["scores"]["psi"])
    categorical = [f for f in snap["features"] if f["kind"] == "categorical"]
    assert categorical and all(f["unseen_rate"] == 0.0 for f in categorical)

    for i, target in enumerate(y.tolist()):
        label = target if card.task == "regression" else card.classes[int(target)]
        monitor.feedback(request_id=f"b{i - i % 64}", row=i % 64, label=label)
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == len(y)
    metrics = card.metrics
    if isinstance(metrics, RegressionMetrics):
        assert quality["mae"] == pytest.approx(metrics.mae, rel=1e-3)
        assert quality["rmse"] == pytest.approx(metrics.rmse, rel=1e-3)
    else:
        assert isinstance(metrics, MulticlassMetrics)
        assert quality["accuracy"] == pytest.approx(metrics.accuracy, abs=2 / len(y))
        assert quality["macro_f1"] == pytest.approx(metrics.macro_f1, abs=0.01)
