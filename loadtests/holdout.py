"""The labelled rows a load test replays, read from the model repository (never from the server).

For each model: its card (``model.json``: threshold, positive class, offline test metrics) and
its hold-out split (``holdout.npz``: ``X`` float32 [n, f], ``y`` int64 [n]), the same rows the
offline metrics were computed on. Each row is pre-encoded as a JSON fragment once, so building a
request body on the load generator costs a join, not a float formatting pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from server.modelcard import HOLDOUT_FILE, ModelCard, load_card, version_dirs


@dataclass(frozen=True)
class ReplaySet:
    """One model's rows to send and the facts needed to score the answers."""

    model: str
    version: int
    dataset: str
    X: NDArray[np.float32]
    y: NDArray[np.int64]
    row_json: list[bytes]
    """``row_json[i]`` is ``X[i]`` encoded as a JSON array (float32 values round-trip exactly)."""
    threshold: float
    positive_class: int
    feature_names: list[str]
    offline: dict[str, Any]
    """The card's hold-out test metrics, for the report's "under load vs offline" columns."""

    @property
    def n_rows(self) -> int:
        return int(self.y.size)

    def body(self, indices: list[int] | range) -> bytes:
        """A predict request body carrying the given rows."""
        return b'{"instances":[' + b",".join(self.row_json[i] for i in indices) + b"]}"


def latest_version_dir(models_dir: Path, name: str) -> Path:
    """The newest ``<models_dir>/<name>/<version>`` folder; FileNotFoundError if there is none."""
    candidates = [d for d in version_dirs(models_dir) if d.parent.name == name]
    if not candidates:
        available = sorted({d.parent.name for d in version_dirs(models_dir)})
        raise FileNotFoundError(f"no model {name!r} under {models_dir} (found: {available})")
    return candidates[-1]


def available_models(models_dir: Path) -> list[str]:
    """Models whose newest version has a hold-out file, in name order."""
    names = sorted({d.parent.name for d in version_dirs(models_dir)})
    return [n for n in names if (latest_version_dir(models_dir, n) / HOLDOUT_FILE).is_file()]


def read_card(models_dir: Path, name: str) -> ModelCard:
    return load_card(latest_version_dir(models_dir, name), verify_sha256=False)


def encode_rows(X: NDArray[np.float32]) -> list[bytes]:
    encoder = msgspec.json.Encoder()
    # float32 -> Python float is exact, and its shortest repr parses back to the same float32.
    return [encoder.encode(row) for row in X.tolist()]


def offline_metrics(card: ModelCard) -> dict[str, Any]:
    m = card.metrics
    return {
        "threshold": m.threshold,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "roc_auc": m.roc_auc,
        "pr_auc": m.pr_auc,
        "accuracy": m.accuracy,
        "rows": card.dataset.rows_test,
    }


def load_replay(
    models_dir: Path, name: str, *, shift: float | None = None, seed: int = 7
) -> ReplaySet:
    """The hold-out rows of ``name``; with ``shift``, freshly generated shifted rows instead.

    Shifted rows come from the fraud data generator (``export.data.make_fraud``) with the same
    number of rows as the hold-out split, so they only fit models trained on its features.
    """
    version_dir = latest_version_dir(models_dir, name)
    card = load_card(version_dir, verify_sha256=False)
    if shift is None:
        with np.load(version_dir / HOLDOUT_FILE) as data:
            X = np.ascontiguousarray(data["X"], dtype=np.float32)
            y = np.asarray(data["y"], dtype=np.int64)
        dataset = card.dataset.name
    else:
        from export.data import make_fraud

        n_rows = card.dataset.rows_test or 5_000
        X, y, names = make_fraud(n_rows, seed=seed, shift=shift)
        if names != card.input.feature_names:
            raise ValueError(
                f"model {name!r} was not trained on the fraud generator's features; "
                "the shifted scenario needs a fraud model"
            )
        dataset = f"{card.dataset.name} shift={shift:g}"
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != card.input.n_features:
        raise ValueError(f"{version_dir}: hold-out X {X.shape} / y {y.shape} do not match the card")
    return ReplaySet(
        model=card.name,
        version=card.version,
        dataset=dataset,
        X=X,
        y=y,
        row_json=encode_rows(X),
        threshold=card.threshold,
        positive_class=card.positive_class,
        feature_names=list(card.input.feature_names),
        offline=offline_metrics(card),
    )
