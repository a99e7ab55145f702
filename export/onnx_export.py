"""Convert a fitted model to ONNX (skl2onnx or onnxmltools) and check parity with the native model.

Two input layouts (``server.modelcard.InputSpec``):

- ``matrix``: one float32 input ``input`` ``[batch, n_columns]`` (numeric models, XGBoost with
  native categorical features fed category codes). A scikit-learn pipeline whose
  ColumnTransformer selects columns by name is converted with one input per column and then given
  one ``Split`` node in front, so it too takes the matrix.
- ``columns``: one ``[batch, 1]`` input per column, named as the column, of the column's dtype
  (strings reach ONNX Runtime as strings; the user's encoders run inside the graph).

Outputs are plain tensors (no ZipMap): classifiers ``label`` and ``probabilities`` (float32
``[batch, n_classes]``), regressors one float32 value tensor (skl2onnx and onnxmltools call it
``variable``).

Parity is checked on the row matrix through :class:`server.columns.Codec`, the same code the
server feeds ONNX Runtime with, against the native model's own answers on the raw values.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

from server.columns import UNSEEN, Codec
from server.errors import ExportError, ParityError, UnsupportedEstimator
from server.modelcard import Column, InputSpec, Task

INPUT_NAME = "input"
LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"
OPSET = 15
"""Default-domain opset: the highest onnxmltools 1.16's XGBoost converter accepts."""
ML_OPSET = 3
"""ai.onnx.ml opset for skl2onnx (TreeEnsemble with double thresholds)."""
TOLERANCE = 1e-4
"""Largest allowed |ONNX - native| probability difference."""
REGRESSION_TOLERANCE = 1e-4
"""Largest allowed |ONNX - native| prediction difference of a regressor, relative to the
standard deviation of the hold-out target."""
PROBE_SHARE = 0.1
"""Share of a column's cells made missing (or unseen) when probing what the model takes."""


@dataclass(frozen=True)
class Exported:
    """An ONNX graph as bytes, with the names the model card records."""

    onnx_bytes: bytes
    opset: int
    input_name: str
    proba_output: str | None
    label_output: str | None
    value_output: str | None = None

    @property
    def output(self) -> str:
        """The output the server reads: probabilities, or a regressor's value."""
        name = self.proba_output or self.value_output
        assert name is not None
        return name


def estimator_name(model: Any) -> str:
    """The estimator's public class path, e.g. ``sklearn.pipeline.Pipeline``."""
    cls = type(model)
    parts = [p for p in cls.__module__.split(".") if not p.startswith("_")]
    if parts[0] == "xgboost":  # xgboost.sklearn.XGBClassifier is exported as xgboost.XGBClassifier
        parts = parts[:1]
    return ".".join([*parts, cls.__qualname__])


def to_onnx(model: Any, spec: InputSpec | int, framework: str, task: Task = "binary") -> Exported:
    """Convert ``model`` (a scikit-learn estimator or Pipeline, an XGBoost classifier or
    regressor) for the input ``spec`` (or, for numeric columns, their number)."""
    if isinstance(spec, int):
        spec = InputSpec(columns=[Column(name=f"f{i}") for i in range(spec)])
    if framework == "xgboost":
        if spec.layout != "matrix":
            raise UnsupportedEstimator("an XGBoost model takes the matrix layout only")
        proto = _convert_xgboost(model, spec.n_features)
    elif framework == "sklearn":
        proto = _convert_sklearn(model, spec, task)
    else:
        raise UnsupportedEstimator(f"unknown framework {framework!r} for {estimator_name(model)}")
    outputs = [o.name for o in proto.graph.output]
    input_name = spec.name if spec.layout == "matrix" else ""
    if task == "regression":
        value = _value_output(proto)
        if value is None:
            raise UnsupportedEstimator(
                f"{estimator_name(model)}: ONNX outputs {outputs} hold no float prediction"
            )
        return Exported(proto.SerializeToString(), OPSET, input_name, None, None, value)
    if PROBA_OUTPUT not in outputs or LABEL_OUTPUT not in outputs:
        raise UnsupportedEstimator(
            f"{estimator_name(model)}: ONNX outputs {outputs} lack '{LABEL_OUTPUT}' and "
            f"'{PROBA_OUTPUT}' tensors"
        )
    return Exported(proto.SerializeToString(), OPSET, input_name, PROBA_OUTPUT, LABEL_OUTPUT)


def _value_output(proto: onnx.ModelProto) -> str | None:
    for out in proto.graph.output:
        if out.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            return str(out.name)
    return None


def _convert_sklearn(model: Any, spec: InputSpec, task: Task) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    per_column = spec.layout == "columns" or selects_by_name(model)
    if per_column:
        types: dict[str, Any] = {
            "float32": FloatTensorType,
            "string": StringTensorType,
            "int64": Int64TensorType,
        }
        initial = [(c.name, types[c.dtype]([None, 1])) for c in spec.columns]
    else:
        initial = [(spec.name, FloatTensorType([None, spec.n_features]))]
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
                initial_types=initial,
                target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
                options=None if task == "regression" else {"zipmap": False},
            )
    except (MissingConverter, MissingShapeCalculator) as exc:
        raise UnsupportedEstimator(
            f"no ONNX converter for {_unsupported_part(model)}: {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # a user's model: any converter failure is a refusal, said once
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise UnsupportedEstimator(
            f"skl2onnx cannot convert {estimator_name(model)} ({reason})"
        ) from exc
    if per_column and spec.layout == "matrix":
        proto = _matrix_in_front(proto, spec)
    return proto


def selects_by_name(model: Any) -> bool:
    """True when a ColumnTransformer in ``model`` selects columns by name (skl2onnx then needs
    one named input per column)."""
    from sklearn.compose import ColumnTransformer

    for step in _steps(model):
        if isinstance(step, ColumnTransformer):
            for _, _, columns in step.transformers:
                if isinstance(columns, str) or callable(columns):
                    return True
                if isinstance(columns, (list, tuple)) and any(isinstance(c, str) for c in columns):
                    return True
    return False


def _steps(model: Any) -> list[Any]:
    """``model`` and every estimator nested in it (pipelines, column transformers)."""
    found = [model]
    for _, step in getattr(model, "steps", []):
        found.extend(_steps(step))
    for _, transformer, _ in getattr(model, "transformers", []):
        if not isinstance(transformer, str):
            found.extend(_steps(transformer))
    return found


def _matrix_in_front(proto: onnx.ModelProto, spec: InputSpec) -> onnx.ModelProto:
    """Replace the per-column float inputs of ``proto`` by one matrix input split in front."""
    graph = proto.graph
    names = spec.feature_names
    kept = [i for i in graph.input if i.name not in names]
    split = onnx.helper.make_node(
        "Split", [spec.name], list(names), axis=1, name="tabserve_matrix_to_columns"
    )
    matrix = onnx.helper.make_tensor_value_info(
        spec.name, onnx.TensorProto.FLOAT, [None, len(names)]
    )
    if len(names) == 1:
        split = onnx.helper.make_node("Identity", [spec.name], list(names))
    del graph.input[:]
    graph.input.extend([matrix, *kept])
    graph.node.insert(0, split)
    onnx.checker.check_model(proto)
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

    # onnxmltools needs unnamed (f0, f1, ...) features, and writes softmax's one-hot labels where
    # the native classifier's predict_proba answers probabilities: convert a copy that differs
    # in exactly that (same trees).
    config = json.loads(model.get_booster().save_config())
    objective = config["learner"]["objective"]["name"]
    copy = type(model)()
    copy.load_model(bytearray(model.get_booster().save_raw("json")))
    copy.get_booster().feature_names = None
    if objective == "multi:softmax":
        copy.get_booster().set_param({"objective": "multi:softprob"})
        copy.set_params(objective="multi:softprob")
    try:
        proto: onnx.ModelProto = convert_xgboost(
            copy,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset=OPSET,
        )
    except Exception as exc:  # a user's model: any converter failure is a refusal, said once
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        raise UnsupportedEstimator(
            f"onnxmltools cannot convert {estimator_name(model)} with objective "
            f"{objective!r} ({reason})"
        ) from exc
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
    """The classifier's probabilities for a numeric matrix ``X`` (matrix layout)."""
    result = sess.run([exported.output], {exported.input_name: X})
    return np.asarray(result[0])


NativeInput = Callable[[NDArray[np.float32]], Any]


class Scorer:
    """Answers of the ONNX graph and of the native model on the same rows of the row matrix.

    ONNX Runtime gets :meth:`server.columns.Codec.onnx_feeds` of the rows (what the server
    feeds it); the native model gets ``native_input(rows)`` (raw values, e.g. a DataFrame of
    strings), or the rows themselves. Both answer ``[n, k]`` float64: class probabilities in the
    order of the classes, or a regressor's value as one column.
    """

    def __init__(
        self,
        model: Any,
        exported: Exported,
        spec: InputSpec,
        task: Task,
        sess: ort.InferenceSession,
        native_input: NativeInput | None = None,
    ) -> None:
        self.model = model
        self.exported = exported
        self.spec = spec
        self.task = task
        self.sess = sess
        self.codec = Codec(spec)
        self.native_input = native_input

    def onnx(self, X: NDArray[np.float32]) -> NDArray[np.float64]:
        out = self.sess.run([self.exported.output], self.codec.onnx_feeds(X))[0]
        return np.asarray(out, dtype=np.float64).reshape(len(X), -1)

    def native(self, X: NDArray[np.float32]) -> NDArray[np.float64]:
        """The native model's answers; exceptions it raises pass through."""
        given = X if self.native_input is None else self.native_input(X)
        with warnings.catch_warnings():
            # A BYO model fitted on a DataFrame warns that a plain array has no feature names;
            # the columns were already put in the model's order: the warning says nothing.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.task == "regression":
                out = np.asarray(self.model.predict(given), dtype=np.float64)
            else:
                out = np.asarray(self.model.predict_proba(given), dtype=np.float64)
        return out.reshape(len(X), -1)


def native_proba(model: Any, X: NDArray[np.float32]) -> NDArray[np.float64]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return np.asarray(model.predict_proba(X), dtype=np.float64)


def max_abs_diff(
    model: Any,
    exported: Exported,
    X: NDArray[np.float32],
    sess: ort.InferenceSession | None = None,
) -> float:
    """Largest |ONNX - native| over all probabilities of all rows of a numeric matrix ``X``."""
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
    X_nan[rng.random(X_nan.shape) < PROBE_SHARE] = np.nan
    try:
        diff = max_abs_diff(model, exported, X_nan, sess)
    except ValueError:  # the native model refuses NaN (e.g. LogisticRegression)
        return False
    return diff <= TOLERANCE


# --- parity per task, on the row matrix ---------------------------------------------------------


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    tolerance: float
    relative_to: float | None
    columns: list[Column]
    """The input columns with ``allow_missing`` and ``unknown`` as the probes found them."""


def parity_tolerance(task: Task, y_test: NDArray[Any]) -> tuple[float, float | None]:
    """(absolute tolerance, the scale it is relative to): probabilities absolute, a regressor's
    value relative to the hold-out target's standard deviation."""
    if task != "regression":
        return TOLERANCE, None
    scale = float(np.std(np.asarray(y_test, dtype=np.float64)))
    if not np.isfinite(scale) or scale <= 0.0:
        scale = 1.0
    return REGRESSION_TOLERANCE * scale, scale


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def check_parity_rows(
    scorer: Scorer,
    X: NDArray[np.float32],
    y: NDArray[Any],
    label: str,
    seed: int = 0,
    cause: str = "",
) -> ParityResult:
    """Parity on the hold-out rows ``X``, then per column: missing values (columns whose ONNX
    input is float32) and unseen categories. Raise ParityError (naming ``cause`` when given,
    e.g. categorical features a converter gets wrong) when the plain rows disagree, or when a
    column's unseen values are served by both models but differently."""
    tolerance, relative_to = parity_tolerance(scorer.task, y)
    what = "predictions" if scorer.task == "regression" else "probabilities"
    got = scorer.onnx(X)
    try:
        want = scorer.native(X)
    except Exception as exc:  # the user's model: whatever it raises is a refusal of these rows
        raise ExportError(
            f"{label}: the native model fails on the hold-out rows ({_first_line(exc)})"
        ) from exc
    if got.shape != want.shape:
        raise ParityError(f"{label}: ONNX {what} have shape {got.shape}, native {want.shape}")
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not diff <= tolerance:
        raise ParityError(
            f"{label}: ONNX and native {what} differ by {diff:.3g} on {len(X)} rows "
            f"(tolerance {tolerance:.3g}){cause}; not publishing"
        )
    rng = np.random.default_rng(seed)
    columns: list[Column] = []
    for j, column in enumerate(scorer.spec.columns):
        allow_missing = False
        if column.dtype == "float32":
            probe = _probe(X, j, np.float32(np.nan), rng)
            d = _probe_diff(scorer, probe)
            allow_missing = d is not None and d <= tolerance
            if allow_missing and d is not None:
                diff = max(diff, d)
        unknown = column.unknown
        if column.kind == "categorical":
            probe = _probe(X, j, np.float32(UNSEEN), rng)
            d = _probe_diff(scorer, probe)
            if d is None:
                unknown = "refuse"
            elif d <= tolerance:
                unknown, diff = "serve", max(diff, d)
            else:
                raise ParityError(
                    f"{label}: column {column.name!r}: with values outside its categories the "
                    f"native model and ONNX answer differently ({what} differ by {d:.3g}, "
                    f"tolerance {tolerance:.3g}); not publishing"
                )
        columns.append(_replace(column, allow_missing=allow_missing, unknown=unknown))
    return ParityResult(diff, tolerance, relative_to, columns)


def _replace(column: Column, *, allow_missing: bool, unknown: Any) -> Column:
    import msgspec

    return msgspec.structs.replace(column, allow_missing=allow_missing, unknown=unknown)


def _probe(
    X: NDArray[np.float32], j: int, value: np.float32, rng: np.random.Generator
) -> NDArray[np.float32]:
    """About :data:`PROBE_SHARE` of ``X``'s rows (at least one) with column ``j`` set to
    ``value``: only the rows the probe changes (the others were compared already), so a probe
    per column costs a tenth of a pass over the hold-out (xgb_large, 24 columns: 26 s to 4 s)."""
    rows = rng.random(len(X)) < PROBE_SHARE
    rows[int(rng.integers(len(X)))] = True
    out = X[rows]  # a copy (boolean indexing)
    out[:, j] = value
    return out


def _probe_diff(scorer: Scorer, X: NDArray[np.float32]) -> float | None:
    """max |ONNX - native| on ``X``; None when the native model refuses the rows."""
    try:
        want = scorer.native(X)
    except Exception:  # the native model refuses these values (NaN, an unknown category)
        return None
    got = scorer.onnx(X)
    if got.shape != want.shape or not np.isfinite(want).all():
        return None
    return float(np.max(np.abs(got - want)))
