"""Convert a fitted model to ONNX (skl2onnx or onnxmltools) and check parity with the native model.

Every exported graph takes one float32 input ``input`` of shape ``[batch, n_features]`` and
returns plain tensors (no ZipMap): ``label`` and ``probabilities`` (float32 ``[batch, n_classes]``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from server.errors import ParityError, UnsupportedEstimator

INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"
OPSET = 15
"""Default-domain opset: the highest onnxmltools 1.16's XGBoost converter accepts."""
ML_OPSET = 3
"""ai.onnx.ml opset for skl2onnx (TreeEnsemble with double thresholds)."""
TOLERANCE = 1e-4
"""Largest allowed |ONNX - native| probability difference."""


@dataclass(frozen=True)
class Exported:
    """An ONNX graph as bytes, with the names the model card records."""

    onnx_bytes: bytes
    opset: int
    input_name: str
    proba_output: str
    label_output: str


def estimator_name(model: Any) -> str:
    """The estimator's public class path, e.g. ``sklearn.pipeline.Pipeline``."""
    cls = type(model)
    parts = [p for p in cls.__module__.split(".") if not p.startswith("_")]
    if parts[0] == "xgboost":  # xgboost.sklearn.XGBClassifier is exported as xgboost.XGBClassifier
        parts = parts[:1]
    return ".".join([*parts, cls.__qualname__])


def to_onnx(model: Any, n_features: int, framework: str) -> Exported:
    """Convert ``model`` (sklearn estimator/Pipeline or xgboost.XGBClassifier) to ONNX."""
    if framework == "xgboost":
        proto = _convert_xgboost(model, n_features)
    elif framework == "sklearn":
        proto = _convert_sklearn(model, n_features)
    else:
        raise UnsupportedEstimator(f"unknown framework {framework!r} for {estimator_name(model)}")
    outputs = [o.name for o in proto.graph.output]
    if PROBA_OUTPUT not in outputs or LABEL_OUTPUT not in outputs:
        raise UnsupportedEstimator(
            f"{estimator_name(model)}: ONNX outputs {outputs} lack '{LABEL_OUTPUT}' and "
            f"'{PROBA_OUTPUT}' tensors"
        )
    return Exported(proto.SerializeToString(), OPSET, INPUT_NAME, PROBA_OUTPUT, LABEL_OUTPUT)


def _convert_sklearn(model: Any, n_features: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    try:
        with warnings.catch_warnings():
            # skl2onnx 1.20 writes HistGradientBoosting's missing-value flags as booleans into an
            # int attribute; protobuf 6 stores them correctly (parity is checked) but warns that
            # protobuf 7 will refuse them. That is why protobuf is pinned to 6.x.
            warnings.filterwarnings(
                "ignore",
                message="Field onnx.AttributeProto.ints: Expected an int, got a boolean",
                category=DeprecationWarning,
            )
            proto: onnx.ModelProto = convert_sklearn(
                model,
                initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
                options={"zipmap": False},
            )
    except (MissingConverter, MissingShapeCalculator) as exc:
        raise UnsupportedEstimator(
            f"no ONNX converter for {_unsupported_part(model)}: {str(exc).splitlines()[0]}"
        ) from exc
    return proto


def _unsupported_part(model: Any) -> str:
    """Name the first step of ``model`` (or the model itself) that skl2onnx cannot convert."""
    from skl2onnx import get_model_alias

    for step_name, step in getattr(model, "steps", []):
        if step in (None, "passthrough"):
            continue
        try:
            get_model_alias(type(step))
        except RuntimeError:
            return f"{estimator_name(step)} (pipeline step {step_name!r})"
    return estimator_name(model)


def _convert_xgboost(model: Any, n_features: int) -> onnx.ModelProto:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    proto: onnx.ModelProto = convert_xgboost(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=OPSET,
    )
    return proto


def session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session: single-threaded (as the cost measurement uses) unless ``threads`` > 1."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning on cores that other work may need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def onnx_proba(sess: ort.InferenceSession, exported: Exported, X: NDArray[np.float32]) -> Any:
    result = sess.run([exported.proba_output], {exported.input_name: X})
    return np.asarray(result[0])


def native_proba(model: Any, X: NDArray[np.float32]) -> NDArray[np.float64]:
    with warnings.catch_warnings():
        # A BYO model fitted on a DataFrame warns that a plain array has no feature names; the
        # columns were already put in the model's order, so the warning carries no information.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return np.asarray(model.predict_proba(X), dtype=np.float64)


def max_abs_diff(
    model: Any,
    exported: Exported,
    X: NDArray[np.float32],
    sess: ort.InferenceSession | None = None,
) -> float:
    """Largest |ONNX - native| over all probabilities of all rows of ``X``."""
    got = onnx_proba(sess or session(exported.onnx_bytes), exported, X)
    want = native_proba(model, X)
    if got.shape != want.shape:
        raise ParityError(f"ONNX probabilities have shape {got.shape}, native {want.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - want)))


def check_parity(
    model: Any,
    exported: Exported,
    X: NDArray[np.float32],
    label: str,
    sess: ort.InferenceSession | None = None,
) -> float:
    """Return the max abs difference on ``X``; raise ParityError above :data:`TOLERANCE`."""
    diff = max_abs_diff(model, exported, X, sess)
    if not diff <= TOLERANCE:
        raise ParityError(
            f"{label}: ONNX and native probabilities differ by {diff:.3g} on {len(X)} rows "
            f"(tolerance {TOLERANCE:g}); not publishing"
        )
    return diff


def handles_missing(
    model: Any,
    exported: Exported,
    X: NDArray[np.float32],
    seed: int,
    sess: ort.InferenceSession | None = None,
) -> bool:
    """True if the native model accepts NaN and ONNX matches it with ~10% of values missing."""
    rng = np.random.default_rng(seed)
    X_nan = X.copy()
    X_nan[rng.random(X_nan.shape) < 0.1] = np.nan
    try:
        diff = max_abs_diff(model, exported, X_nan, sess)
    except ValueError:  # the native model refuses NaN (e.g. LogisticRegression)
        return False
    return diff <= TOLERANCE
