"""The ``/v2`` infer route's wire format: plain JSON, and binary tensors (``server.oip.binary``).

Both decoders hold the request to the model's metadata (``server.oip.schema``) and keep what the
answer needs (:class:`InferSpec`: the id, the outputs, which of them are binary); the encoder
answers plain JSON, or JSON followed by binary data with ``Inference-Header-Content-Length``
when some output is asked for in binary.
"""

from __future__ import annotations

import numpy as np

from server.core import Answer
from server.modelcard import ModelCard
from server.oip.binary import (
    OCTET_STREAM,
    InferSpec,
    decode_request,
    encode_response,
    header_length,
    infer_spec,
)
from server.oip.v2json import decode_infer, decode_infer_large

_OCTET = (b"content-type", OCTET_STREAM.encode())


def decode_json(body: bytes, card: ModelCard, max_rows: int) -> tuple[np.ndarray, InferSpec]:
    rows, req = decode_infer(body, card, max_rows)
    return rows, infer_spec(card, req.id, req.parameters, req.outputs)


async def decode_json_large(
    body: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, InferSpec]:
    rows, req = await decode_infer_large(body, card, max_rows)
    return rows, infer_spec(card, req.id, req.parameters, req.outputs)


def decode_binary(
    body: bytes, json_length: bytes, card: ModelCard, max_rows: int
) -> tuple[np.ndarray, InferSpec]:
    """A body whose first ``json_length`` (the header's value) bytes are the JSON request."""
    return decode_request(body, header_length(json_length, len(body)), card, max_rows)


def encode(card: ModelCard, request_id: str, spec: InferSpec, scores: np.ndarray) -> bytes | Answer:
    body, json_length = encode_response(card, request_id, spec, scores)
    if json_length is None:
        return body
    return Answer(body, [_OCTET, (b"inference-header-content-length", b"%d" % json_length)])
