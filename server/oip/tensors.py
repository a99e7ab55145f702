"""Tensors in the Open Inference Protocol's raw layout, to and from numpy.

The raw layout (gRPC ``raw_input_contents`` / ``raw_output_contents``, REST binary data) is the
tensor's elements flattened in row-major order, little-endian, without padding; BOOL is one byte
per element; BYTES is each element as a 4-byte little-endian length followed by its bytes.
Every problem is an :class:`InvalidInput` naming the tensor.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from server.errors import InvalidInput

FIXED: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""The fixed-size datatypes and their numpy dtypes in the raw layout."""

BYTES = "BYTES"
DATATYPES = frozenset([*FIXED, BYTES])

_LENGTH = struct.Struct("<I")


def element_count(shape: list[int], name: str) -> int:
    """The number of elements ``shape`` holds; a negative dimension is refused."""
    if any(d < 0 for d in shape):
        raise InvalidInput(f"tensor {name!r}: shape {shape} has a negative dimension")
    return math.prod(shape)


def from_raw(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """A tensor from its raw bytes: a numpy array of ``shape`` (BYTES: an object array of
    ``bytes``). The size must be exactly what the shape and datatype take."""
    count = element_count(shape, name)
    if datatype == BYTES:
        return np.array(bytes_from_raw(raw, count, name), dtype=object).reshape(shape)
    dtype = FIXED.get(datatype)
    if dtype is None:
        raise InvalidInput(f"tensor {name!r}: unknown datatype {datatype!r}")
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"tensor {name!r}: {len(raw)} bytes of data; shape {shape} of {datatype} takes "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.size and array.view(np.uint8).max() > 1:
        raise InvalidInput(f"tensor {name!r}: BOOL bytes must be 0 or 1")
    return array.reshape(shape)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's raw bytes (BYTES: ``array`` holds ``bytes`` or ``str`` elements)."""
    if datatype == BYTES:
        return bytes_to_raw(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=FIXED[datatype]).tobytes()


def bytes_from_raw(raw: bytes, count: int, name: str) -> list[bytes]:
    """``count`` length-prefixed elements that fill ``raw`` exactly."""
    items: list[bytes] = []
    view = memoryview(raw)
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInput(
                f"tensor {name!r}: BYTES data ends before element {i} of {count} (each element "
                "is a 4-byte little-endian length, then its bytes)"
            )
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(
                f"tensor {name!r}: BYTES element {i} says {length} bytes, {end - pos} are left"
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if pos != end:
        raise InvalidInput(
            f"tensor {name!r}: {end - pos} bytes of BYTES data left after its {count} elements"
        )
    return items


def bytes_to_raw(items: list[Any]) -> bytes:
    """Elements (``bytes`` or ``str``, sent as UTF-8) in the length-prefixed layout."""
    parts: list[bytes] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
