"""Bring your own model: a saved scikit-learn estimator/Pipeline (joblib) or XGBoost model file
(JSON/UBJ) plus a CSV of labelled hold-out rows becomes a repository entry like the bundled ones.

There are no training rows, so the hold-out CSV is split in half (stratified): the validation
half chooses the threshold and provides the drift reference, the test half gives the metrics and
the parity check and becomes holdout.npz. Loading a joblib file runs arbitrary code from it:
convert only files you trust.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from export.build import library_versions, pipeline_source_hash
from export.onnx_export import estimator_name
from export.pipeline import Candidate, Rows, publish_candidate
from export.progress import Progress, quiet
from export.repository import latest_card
from export.splits import holdout_halves
from server.errors import ExportError, UnsupportedEstimator
from server.modelcard import NAME_PATTERN, DatasetInfo, ModelCard

XGBOOST_SUFFIXES = (".json", ".ubj")


@dataclass(frozen=True)
class Holdout:
    X: NDArray[np.float32]
    y: NDArray[np.int64]
    feature_names: list[str]


@dataclass(frozen=True)
class ConvertResult:
    card: ModelCard
    published: bool
    """False when the same model file and CSV were already the latest version."""


def load_model(path: Path) -> tuple[Any, str]:
    """Load a model file; return it with its framework ('sklearn' or 'xgboost').

    ``.json``/``.ubj`` files are read by XGBoost (no code runs); anything else by joblib, which
    executes code stored in the file.
    """
    _require_file(path, "model file")
    if path.suffix.lower() in XGBOOST_SUFFIXES:
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            reason = str(exc).strip().splitlines()[0]  # XGBoost appends a native stack trace
            raise ExportError(f"{path}: not a readable XGBoost model ({reason})") from exc
        return _xgb_classifier(booster, path.name), "xgboost"
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # whatever unpickling raises: the file is not a saved model
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise ExportError(f"{path}: not a readable joblib model file ({reason})") from exc
    return _check_loaded(model, path.name)


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ExportError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ExportError(f"{what} {path} is not a file")


def _check_loaded(model: Any, origin: str) -> tuple[Any, str]:
    import xgboost as xgb
    from sklearn.base import is_classifier

    if isinstance(model, xgb.Booster):
        return _xgb_classifier(model, origin), "xgboost"
    if isinstance(model, xgb.XGBClassifier):
        return model, "xgboost"
    if not is_classifier(model) or not hasattr(model, "predict_proba"):
        raise UnsupportedEstimator(
            f"{origin}: {estimator_name(model)} is not a classifier with predict_proba; "
            "tabserve exports binary classifiers"
        )
    return model, "sklearn"


def _xgb_classifier(booster: Any, origin: str) -> Any:
    import xgboost as xgb

    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective not in {"binary:logistic", "binary:logitraw"}:
        raise UnsupportedEstimator(
            f"{origin}: XGBoost model with objective {objective!r}; only binary:logistic "
            "classifiers are supported"
        )
    model = xgb.XGBClassifier()
    model.load_model(bytearray(booster.save_raw("json")))
    return model


def read_holdout(path: Path, label_column: str) -> Holdout:
    """Read a CSV with a header row; every column but ``label_column`` is a numeric feature.

    Empty cells are missing values (NaN).
    """
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ExportError(f"{path}: empty CSV") from None
            if label_column not in header:
                raise ExportError(f"{path}: no label column {label_column!r} in header {header}")
            rows = [row for row in reader if row]
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path}: not a UTF-8 text CSV ({exc.reason})") from None
    if not rows:
        raise ExportError(f"{path}: no data rows")
    label_at = header.index(label_column)
    try:
        values = np.array(
            [[float(v) if v.strip() else math.nan for v in row] for row in rows], dtype=np.float64
        )
    except ValueError as exc:
        raise ExportError(f"{path}: every cell must be a number ({exc})") from exc
    if values.shape[1] != len(header):
        raise ExportError(f"{path}: rows have {values.shape[1]} cells, header {len(header)}")
    labels = values[:, label_at]
    if not np.all(np.isin(labels, [0.0, 1.0])):
        raise ExportError(f"{path}: labels in {label_column!r} must be 0 or 1")
    X = np.delete(values, label_at, axis=1).astype(np.float32)
    names = [h for i, h in enumerate(header) if i != label_at]
    return Holdout(X, labels.astype(np.int64), names)


def _model_feature_names(model: Any, framework: str) -> list[str] | None:
    if framework == "xgboost":
        names = model.get_booster().feature_names
        return None if names is None else [str(n) for n in names]
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def align_features(model: Any, framework: str, holdout: Holdout) -> Holdout:
    """Put the CSV's columns in the order the model was fitted with (when it knows its names)."""
    expected = _model_feature_names(model, framework)
    if framework == "xgboost":
        # onnxmltools needs unnamed (f0, f1, …) features; the card keeps the names.
        model.get_booster().feature_names = None
    if expected is None:
        n_model = getattr(model, "n_features_in_", None)
        if n_model is not None and int(n_model) != len(holdout.feature_names):
            raise ExportError(
                f"the model takes {n_model} features, the CSV has {len(holdout.feature_names)}"
            )
        return holdout
    missing = [n for n in expected if n not in holdout.feature_names]
    if missing:
        raise ExportError(f"the CSV lacks the model's feature column(s) {missing}")
    order = [holdout.feature_names.index(n) for n in expected]
    return Holdout(holdout.X[:, order], holdout.y, list(expected))


def _fingerprint(model_path: Path, csv_path: Path, label_column: str, seed: int) -> str:
    inputs = {
        "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "csv_sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "label_column": label_column,
        "seed": seed,
        "libraries": library_versions(),
        "pipeline_source": pipeline_source_hash(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def convert(
    model_path: Path,
    holdout_csv: Path,
    label_column: str,
    name: str,
    models_dir: Path,
    seed: int = 0,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert a saved model into a new version of ``name`` in ``models_dir``."""
    progress = progress or quiet(name)
    if not NAME_PATTERN.match(name):
        raise ExportError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    _require_file(model_path, "model file")
    _require_file(holdout_csv, "hold-out CSV")
    fp = _fingerprint(model_path, holdout_csv, label_column, seed)
    latest = latest_card(models_dir, name)
    if latest is not None and latest.fingerprint == fp:
        progress.say(f"unchanged, version {latest.version} is current")
        return ConvertResult(latest, published=False)
    with progress.step(f"loading {model_path.name} and {holdout_csv.name}"):
        model, framework = load_model(model_path)
        holdout = align_features(model, framework, read_holdout(holdout_csv, label_column))
    if holdout.y.sum() < 2 or (len(holdout.y) - holdout.y.sum()) < 2:
        raise ExportError(f"{holdout_csv}: need at least 2 rows of each class to split in half")
    val_idx, test_idx = holdout_halves(holdout.y, seed)
    validation = Rows(holdout.X[val_idx], holdout.y[val_idx])
    test = Rows(holdout.X[test_idx], holdout.y[test_idx])
    candidate = Candidate(
        model=model,
        name=name,
        framework=framework,
        recipe="byo",
        description=f"bring-your-own {estimator_name(model)} from {model_path.name}",
        feature_names=holdout.feature_names,
        reference=validation,
        validation=validation,
        test=test,
        dataset=DatasetInfo(
            name=holdout_csv.stem,
            rows_train=0,
            rows_validation=len(val_idx),
            rows_test=len(test_idx),
            positive_rate_train=float(validation.y.mean()),
            seed=seed,
            source=(
                f"bring-your-own hold-out CSV {holdout_csv.name} ({len(holdout.y)} rows) split in "
                "half, stratified: threshold and drift reference from the validation half (no "
                "training rows available; positive_rate_train is that half's), metrics and parity "
                "on the test half"
            ),
        ),
        fingerprint=fp,
        params={"model_file": model_path.name, "label_column": label_column},
        threshold_rule="f1-optimal on the validation half of the hold-out CSV",
    )
    card = publish_candidate(candidate, models_dir, progress, seed=seed)
    return ConvertResult(card, published=True)
