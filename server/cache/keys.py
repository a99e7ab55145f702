"""Cache keys: which model answered, and a strong hash of exactly which row it was asked.

A key is ``namespace + digest``::

    tabserve:<model>:<version>:<sha256[:16]>:f32x<width>:g<generation>:<16-byte blake2b digest>

* The namespace names the model, its version, the first 16 hex digits of the ONNX file's sha256,
  the input dtype and width, and the model's flush generation. A new version, a re-exported file,
  a different width or a flush all change the namespace, so old entries are never hit again (they
  age out by TTL or LRU).
* The digest is blake2b (16 bytes) of the row's canonical float32 bytes: ``-0.0`` becomes ``0.0``
  and every NaN becomes one quiet NaN (``0x7fc00000``). So rows that differ only in the sign of a
  zero share a key, and **NaN rows are cached: a NaN equals any NaN in the same position**
  (whatever its payload or sign). Models that refuse NaN never see such rows; models that accept
  NaN treat every NaN as "missing", so this is the right equality for them.

Canonicalisation is vectorised over the whole batch; hashing is one blake2b call per row.
"""

from __future__ import annotations

import hashlib

import numpy as np

from server.modelcard import ModelCard

KEY_ROOT = "tabserve"
DIGEST_BYTES = 16
CANONICAL_NAN_BITS = np.uint32(0x7FC00000)
_NEGATIVE_ZERO_BITS = np.uint32(0x80000000)
_ZERO = np.float32(0.0)
_BLAKE2B_16 = hashlib.blake2b(digest_size=DIGEST_BYTES)


def model_prefix(model: str) -> bytes:
    """What every key of one model starts with, across versions and generations."""
    return f"{KEY_ROOT}:{model}:".encode()


def namespace(card: ModelCard, generation: int) -> bytes:
    return (
        f"{KEY_ROOT}:{card.name}:{card.version}:{card.onnx.sha256[:16]}:"
        f"float32x{card.input.n_features}:g{generation}:"
    ).encode()


def canonical_rows(rows: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of ``rows`` [n, f] with -0.0 → 0.0 and every NaN → one NaN."""
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D [n, features], got shape {rows.shape}")
    if rows.shape[1] == 0:
        raise ValueError("rows have no features")
    rows32 = np.asarray(rows, dtype=np.float32)
    nan = np.isnan(rows32)
    if not nan.any():
        # x + 0.0 is x for every number but -0.0, which becomes 0.0, in a fresh array (its
        # order may follow the input's; the digests read ``tobytes()``, always C order):
        # three numpy calls for the usual row where masking both cases took six.
        return rows32 + _ZERO
    canon = np.array(rows32, order="C", copy=True)
    bits = canon.view(np.uint32)
    bits[nan] = CANONICAL_NAN_BITS
    bits[bits == _NEGATIVE_ZERO_BITS] = 0
    return canon


def row_digests(rows: np.ndarray) -> list[bytes]:
    """One 16-byte blake2b digest per row of ``rows`` [n, f], after canonicalisation."""
    canon = canonical_rows(rows)
    width = canon.shape[1] * canon.itemsize
    if canon.shape[0] == 0:
        return []
    data = canon.tobytes()
    digests = []
    for start in range(0, len(data), width):
        h = _BLAKE2B_16.copy()  # cheaper than a new blake2b(digest_size=16) per row
        h.update(data[start : start + width])
        digests.append(h.digest())
    return digests


def row_keys(prefix: bytes, rows: np.ndarray) -> list[bytes]:
    return [prefix + digest for digest in row_digests(rows)]
