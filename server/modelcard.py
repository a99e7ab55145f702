"""model.json: the contract between ``export/`` (which writes it) and the server (which reads it).

Every model version in the repository is a folder ``models/<name>/<version>/`` holding
``model.onnx``, ``model.json`` (a :class:`ModelCard`) and optionally ``holdout.npz`` (the labelled
hold-out rows that the load tests replay). This module has no dependency on scikit-learn or
XGBoost; it is the single validator, used by the exporter before publishing and by the server's
registry before loading.
"""

from __future__ import annotations

import hashlib
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Literal

import msgspec

from server.errors import InvalidModelCard

SCHEMA_VERSION = 1
CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
HOLDOUT_FILE = "holdout.npz"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
VERSION_PATTERN = re.compile(r"[1-9][0-9]*")
"""A version folder's name: a positive integer in ASCII digits without leading zeros."""


class InputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    """ONNX input name."""
    feature_names: list[str]
    dtype: Literal["float32"] = "float32"
    allow_missing: bool = False
    """True when the model handles NaN natively (trees); otherwise NaN/inf are refused."""

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


class OutputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    probabilities: str
    """ONNX output holding class probabilities, float32 [batch, n_classes]."""
    label: str | None = None
    """ONNX output holding the native predicted label (unused by the server)."""


class OnnxInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    file: str
    sha256: str
    opset: int
    size_bytes: int


class DatasetInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    rows_train: int
    rows_validation: int
    rows_test: int
    positive_rate_train: float
    seed: int | None = None
    source: str = ""
    """Where the data came from (generator and parameters, a package's bundled data, a CSV)."""


class Metrics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hold-out test metrics at the threshold chosen on the validation split."""

    threshold: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    accuracy: float
    baseline_accuracy: float
    """Accuracy of always predicting the majority class: read accuracy only beside it."""
    confusion_matrix: list[list[int]]
    """[[tn, fp], [fn, tp]] on the test split."""
    positive_rate_test: float
    cv_pr_auc_mean: float | None = None
    cv_pr_auc_std: float | None = None
    threshold_rule: str = "f1-optimal on validation"


class Parity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_abs_diff: float
    rows: int
    tolerance: float


class Cost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """ONNX Runtime cost measured at export time, one intra-op thread."""

    us_batch1: float
    """Median microseconds for one call with one row."""
    us_per_row_batch64: float
    us_per_row_batch512: float


class Histogram(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bin_edges: list[float]
    """Increasing edges; len(counts) == len(bin_edges) + 1 (open-ended outer bins)."""
    counts: list[int]


class FeatureReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    histogram: Histogram
    missing: int = 0


class Reference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Training-time distributions that drift monitoring compares live traffic against."""

    features: list[FeatureReference]
    scores: Histogram
    """Positive-class score histogram on the training split."""
    base_rate: float
    """Positive rate on the training split."""
    predicted_positive_rate: float
    """Share of training rows at or above the threshold."""


class ModelCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    name: str
    version: int
    created_at: str
    framework: str
    """'sklearn' or 'xgboost' (how the native model was made)."""
    estimator: str
    """The native estimator's class path, e.g. 'xgboost.XGBClassifier'."""
    recipe: str
    """The bundled recipe's name, or 'byo' for a user's own model."""
    input: InputSpec
    outputs: OutputSpec
    classes: list[int]
    positive_class: int
    onnx: OnnxInfo
    dataset: DatasetInfo
    metrics: Metrics
    parity: Parity
    cost: Cost
    reference: Reference
    fingerprint: str = ""
    """Hash of everything that went into the build; unchanged inputs make no new version."""
    params: dict[str, str | int | float | bool | None] = {}
    description: str = ""

    @property
    def threshold(self) -> float:
        return self.metrics.threshold

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)


_decoder = msgspec.json.Decoder(ModelCard)
_encoder = msgspec.json.Encoder()


def decode_card(data: bytes, *, origin: str = "model.json") -> ModelCard:
    """Parse and validate a model.json document; raise InvalidModelCard naming the problem."""
    try:
        card = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidModelCard(f"{origin}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidModelCard(f"{origin}: not valid JSON ({exc})") from exc
    problems = card_problems(card)
    if problems:
        raise InvalidModelCard(f"{origin}: " + "; ".join(problems))
    return card


def encode_card(card: ModelCard) -> bytes:
    """Serialise a card, validating it first so an invalid card is never written."""
    problems = card_problems(card)
    if problems:
        raise InvalidModelCard(f"{card.name}/{card.version}: " + "; ".join(problems))
    return msgspec.json.format(_encoder.encode(card), indent=2) + b"\n"


def card_problems(card: ModelCard) -> list[str]:
    """Semantic checks that a JSON schema cannot express."""
    problems: list[str] = []
    if card.schema_version != SCHEMA_VERSION:
        problems.append(f"schema_version {card.schema_version} is not {SCHEMA_VERSION}")
    if not NAME_PATTERN.match(card.name):
        problems.append(f"name {card.name!r} must match {NAME_PATTERN.pattern}")
    if card.version < 1:
        problems.append(f"version must be a positive integer, got {card.version}")
    names = card.input.feature_names
    if not names:
        problems.append("input.feature_names is empty")
    if len(set(names)) != len(names):
        problems.append("input.feature_names has duplicates")
    if len(card.classes) < 2 or len(set(card.classes)) != len(card.classes):
        problems.append(f"classes must be at least two distinct labels, got {card.classes}")
    elif card.positive_class not in card.classes:
        problems.append(f"positive_class {card.positive_class} is not in classes {card.classes}")
    if not re.fullmatch(r"[0-9a-f]{64}", card.onnx.sha256):
        problems.append("onnx.sha256 must be 64 lowercase hex digits")
    if not 0.0 <= card.metrics.threshold <= 1.0:
        problems.append(f"metrics.threshold {card.metrics.threshold} is outside [0, 1]")
    if (
        not math.isfinite(card.parity.max_abs_diff)
        or card.parity.max_abs_diff > card.parity.tolerance
    ):
        problems.append(
            f"parity.max_abs_diff {card.parity.max_abs_diff} exceeds "
            f"tolerance {card.parity.tolerance}"
        )
    ref_names = [f.name for f in card.reference.features]
    if ref_names != names:
        problems.append("reference.features must list input.feature_names in order")
    for hist_name, hist in [(f.name, f.histogram) for f in card.reference.features] + [
        ("scores", card.reference.scores)
    ]:
        problems.extend(_histogram_problems(hist_name, hist))
    return problems


def _histogram_problems(name: str, hist: Histogram) -> list[str]:
    edges = hist.bin_edges
    if len(hist.counts) != len(edges) + 1:
        return [f"reference {name}: {len(hist.counts)} counts for {len(edges)} edges"]
    if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in pairwise(edges)):
        return [f"reference {name}: bin_edges must be finite and strictly increasing"]
    if any(c < 0 for c in hist.counts):
        return [f"reference {name}: negative count"]
    return []


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(version_dir: Path, *, verify_sha256: bool = True) -> ModelCard:
    """Read and validate ``version_dir/model.json``; check that it matches its folder and file."""
    card_path = version_dir / CARD_FILE
    try:
        data = card_path.read_bytes()
    except OSError as exc:
        raise InvalidModelCard(f"{card_path}: cannot read ({exc.strerror})") from exc
    card = decode_card(data, origin=str(card_path))
    if version_dir.name != str(card.version) or version_dir.parent.name != card.name:
        raise InvalidModelCard(
            f"{card_path}: card says {card.name}/{card.version}, folder is "
            f"{version_dir.parent.name}/{version_dir.name}"
        )
    onnx_path = version_dir / card.onnx.file
    if not onnx_path.is_file():
        raise InvalidModelCard(f"{card_path}: ONNX file {card.onnx.file} is missing")
    if verify_sha256:
        actual = sha256_file(onnx_path)
        if actual != card.onnx.sha256:
            raise InvalidModelCard(
                f"{onnx_path}: sha256 {actual[:12]}… does not match "
                f"model.json {card.onnx.sha256[:12]}…"
            )
    return card


def version_dirs(models_dir: Path) -> list[Path]:
    """All ``<name>/<version>`` folders under the repository, sorted by name then version.

    Folders whose names are not a model name and a positive integer written without leading
    zeros (a temporary folder of an interrupted write, "0", "007" beside "7", "²") are skipped.
    """
    found: list[Path] = []
    if not models_dir.is_dir():
        return found
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if not NAME_PATTERN.match(model_dir.name):
            continue
        versions = [
            p for p in model_dir.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)
        ]
        found.extend(sorted(versions, key=lambda p: int(p.name)))
    return found


def placeholder_card(
    name: str = "placeholder",
    version: int = 1,
    *,
    feature_names: list[str],
    sha256: str = "0" * 64,
    classes: list[int] | None = None,
    threshold: float = 0.5,
    cost: Cost | None = None,
    reference: Reference | None = None,
) -> ModelCard:
    """A valid card for a model that exists only in code: measurements and tests.

    Its metrics are placeholders; its reference is one trivial bin per feature unless given.
    Change any other field with ``msgspec.structs.replace``.
    """
    hist = Histogram(bin_edges=[0.0, 1.0], counts=[1, 1, 1])
    classes = classes if classes is not None else [0, 1]
    return ModelCard(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created_at="2026-01-01T00:00:00+00:00",
        framework="sklearn",
        estimator="placeholder",
        recipe="placeholder",
        input=InputSpec(name="input", feature_names=feature_names),
        outputs=OutputSpec(probabilities="probabilities"),
        classes=classes,
        positive_class=classes[-1],
        onnx=OnnxInfo(file=ONNX_FILE, sha256=sha256, opset=15, size_bytes=1),
        dataset=DatasetInfo(
            name="placeholder",
            rows_train=1,
            rows_validation=1,
            rows_test=1,
            positive_rate_train=0.5,
        ),
        metrics=Metrics(
            threshold=threshold,
            precision=0.5,
            recall=0.5,
            f1=0.5,
            roc_auc=0.5,
            pr_auc=0.5,
            log_loss=0.5,
            brier=0.25,
            accuracy=0.5,
            baseline_accuracy=0.5,
            confusion_matrix=[[1, 1], [1, 1]],
            positive_rate_test=0.5,
        ),
        parity=Parity(max_abs_diff=0.0, rows=1, tolerance=1e-4),
        cost=cost or Cost(us_batch1=10.0, us_per_row_batch64=5.0, us_per_row_batch512=1.0),
        reference=reference
        or Reference(
            features=[FeatureReference(name=f, histogram=hist) for f in feature_names],
            scores=hist,
            base_rate=0.5,
            predicted_positive_rate=0.5,
        ),
    )
