"""A model's tensors as the Open Inference Protocol states them, and requests checked against them.

Every model takes one input, named as in its card (``input``), FP32 ``[-1, n_features]``, and
gives two outputs: ``probabilities`` FP32 ``[-1, n_classes]`` and ``label`` INT64 ``[-1]``. The
model metadata (REST and gRPC) states exactly these, and requests are held to them: an unknown,
repeated or missing input, another datatype or shape, or an output the model does not give is
an :class:`InvalidInput` that names it (too many rows: :class:`PayloadTooLarge`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import NamedTuple

import numpy as np

from server.errors import InvalidInput, PayloadTooLarge
from server.front_rules import first_bad_value, labels_for
from server.modelcard import ModelCard

INPUT_DATATYPE = "FP32"
OUTPUTS = ("probabilities", "label")
PLATFORM = "onnxruntime_onnx"

SERVER_NAME = "tabserve"
EXTENSIONS = ("binary_tensor_data",)
"""Protocol extensions stated in the server metadata (REST binary tensors, server.oip.binary)."""


def server_version() -> str:
    try:
        return metadata.version("tabserve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Tensor(NamedTuple):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class Output(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


def model_inputs(card: ModelCard) -> list[Tensor]:
    return [Tensor(card.input.name, INPUT_DATATYPE, [-1, card.input.n_features])]


def model_outputs(card: ModelCard) -> list[Tensor]:
    return [
        Tensor("probabilities", "FP32", [-1, len(card.classes)]),
        Tensor("label", "INT64", [-1]),
    ]


def _declared(card: ModelCard) -> str:
    return f"{card.input.name!r} ({INPUT_DATATYPE} [-1, {card.input.n_features}])"


def check_inputs(card: ModelCard, inputs: Sequence[Tensor], max_rows: int) -> int:
    """The index in ``inputs`` of the model's input, once every input's name, datatype and shape
    agree with the model's metadata (``shape[0]``: 1 to ``max_rows`` rows)."""
    wanted = card.input.name
    found = -1
    for i, tensor in enumerate(inputs):
        if tensor.name != wanted:
            raise InvalidInput(
                f"model {card.name} has no input {tensor.name!r}; its input is {_declared(card)}"
            )
        if found >= 0:
            raise InvalidInput(f"input {wanted!r} is given more than once")
        found = i
    if found < 0:
        raise InvalidInput(f"input {_declared(card)} is missing")
    tensor = inputs[found]
    if tensor.datatype != INPUT_DATATYPE:
        raise InvalidInput(
            f"input {wanted!r} is {INPUT_DATATYPE} (see the model's metadata), got "
            f"{tensor.datatype!r}"
        )
    shape, n_features = list(tensor.shape), card.input.n_features
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 0:
        raise InvalidInput(
            f"input {wanted!r} has shape [rows, {n_features}] (see the model's metadata), got "
            f"{shape}"
        )
    if shape[0] == 0:
        raise InvalidInput(f"input {wanted!r} has no rows (shape {shape})")
    if shape[0] > max_rows:
        raise PayloadTooLarge(f"{shape[0]} rows in one request; the limit is {max_rows}")
    return found


def check_outputs(card: ModelCard, names: Iterable[str]) -> tuple[str, ...]:
    """The requested outputs, in order, when the model gives every one (none: all of them)."""
    wanted = tuple(names)
    if not wanted:
        return OUTPUTS
    unknown = [name for name in wanted if name not in OUTPUTS]
    if unknown:
        raise InvalidInput(
            f"model {card.name} has no output {unknown[0]!r}; its outputs are {list(OUTPUTS)}"
        )
    return wanted


def check_values(rows: np.ndarray, card: ModelCard) -> np.ndarray:
    """``rows`` when every value is finite (NaN too, for models that allow missing values)."""
    bad = first_bad_value(rows, card.input.allow_missing)
    if bad is None:
        return rows
    r, c = bad
    what = "infinite" if card.input.allow_missing else "missing (NaN) or infinite"
    raise InvalidInput(
        f"row {r} feature {card.input.feature_names[c]!r} is {what}"
        + ("" if card.input.allow_missing else f"; model {card.name} needs every value")
    )


def labels(card: ModelCard, scores: np.ndarray) -> list[int]:
    """The ``label`` output, as ``/v1`` answers it (one rule: ``server.front_rules.labels_for``)."""
    return labels_for(scores.tolist(), card)


def outputs(card: ModelCard, scores: np.ndarray, wanted: Sequence[str]) -> list[Output]:
    """The requested output tensors for ``scores`` (float32 [n, n_classes])."""
    n = len(scores)
    out: list[Output] = []
    for name in wanted:
        if name == "probabilities":
            out.append(Output(name, "FP32", [n, scores.shape[1]], scores))
        else:
            out.append(Output(name, "INT64", [n], np.asarray(labels(card, scores), np.int64)))
    return out
