"""One gRPC call as the HTTP/2 front reads and answers it: its headers (path, deadline,
metadata), its one length-prefixed message, and the header blocks of its answer."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from server.oip.grpc_errors import GrpcError
from server.oip.hpack import Field, encode

MESSAGE_PREFIX = struct.Struct(">BL")
"""compressed flag, message length (gRPC's Length-Prefixed-Message)."""
CONTENT_TYPE = b"application/grpc"
OK_HEADERS = encode([(b":status", b"200"), (b"content-type", CONTENT_TYPE)])
OK_TRAILERS = encode([(b"grpc-status", b"0")])
GRPC_MESSAGE_MAX = 2048
"""Bytes of ``grpc-message`` at most, once percent-encoded (clients cap metadata at 8 KiB)."""
_CONTENT_TYPE_VARIANTS = (CONTENT_TYPE + b"+", CONTENT_TYPE + b";")  # +proto; charset=...
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


class Call:
    """What one call's headers say: its metadata (lowercase names, latin-1 values, pseudo-headers
    and the protocol's own headers left out) and its deadline (``time.monotonic()``, or None)."""

    __slots__ = ("deadline", "metadata")

    def __init__(self, metadata: list[tuple[str, str]], deadline: float | None) -> None:
        self.metadata = metadata
        self.deadline = deadline


class Method(NamedTuple):
    """A served method: how its request parses, and its handler (a plain function for the ones
    that never wait, a coroutine function for the rest)."""

    parse: Callable[[bytes], Any]
    handler: Callable[[Any, Call], Any]
    waits: bool


class CallHeaders(NamedTuple):
    """A call's header block, read once (a repeated block decodes to the same list, read once)."""

    path: bytes
    problem: tuple[int, bytes] | None  # (HTTP status, reason) when it is not a gRPC call
    unsupported_encoding: bytes | None
    timeout: float | None
    metadata: list[tuple[str, str]]


def read_headers(fields: list[Field]) -> CallHeaders:
    path = method = content_type = b""
    encoding: bytes | None = None
    timeout: float | None = None
    metadata: list[tuple[str, str]] = []
    problem: tuple[int, bytes] | None = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = _timeout(value)
            if timeout is None:
                problem = (400, b"grpc-timeout is not a valid timeout")
        elif name == b"grpc-encoding":
            if value != b"identity":
                encoding = value
        elif name != b"te" and not name.startswith(b"grpc-"):
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
    if method != b"POST":
        problem = (405, b"gRPC calls are POST requests")
    elif content_type != CONTENT_TYPE and not content_type.startswith(_CONTENT_TYPE_VARIANTS):
        problem = (415, b"gRPC calls have content-type application/grpc")
    return CallHeaders(path, problem, encoding, timeout, metadata)


def _timeout(value: bytes) -> float | None:
    """``grpc-timeout`` in seconds: up to 8 digits and a unit (H, M, S, m, u, n)."""
    digits, unit = value[:-1], _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def check_message(
    headers: CallHeaders, body: bytes, methods: dict[bytes, Method]
) -> GrpcError | None:
    """Why the call cannot run (unknown method, compression, not exactly one message), or None."""
    if headers.path not in methods:
        return GrpcError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"method {headers.path.decode('latin-1')} is not served here",
            404,
        )
    if headers.unsupported_encoding is not None:
        return GrpcError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"grpc-encoding {headers.unsupported_encoding.decode('latin-1')} is not "
            "supported; send messages uncompressed (identity)",
            400,
            (("grpc-accept-encoding", "identity"),),
        )
    if len(body) < 5:
        return invalid("a unary call carries one length-prefixed message; none arrived")
    compressed, length = MESSAGE_PREFIX.unpack_from(body)
    if compressed:
        return GrpcError(
            grpc.StatusCode.UNIMPLEMENTED,
            "compressed messages are not supported; send messages uncompressed (identity)",
            400,
            (("grpc-accept-encoding", "identity"),),
        )
    if length != len(body) - 5:
        return invalid(
            f"a unary call carries one message: its prefix says {length} bytes, "
            f"{len(body) - 5} arrived"
        )
    return None


def invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message, 400)


def status_block(error: GrpcError) -> bytes:
    """The header block of a trailers-only answer carrying ``error``."""
    fields = [
        (b":status", b"200"),
        (b"content-type", CONTENT_TYPE),
        (b"grpc-status", str(error.code.value[0]).encode()),
        (b"grpc-message", percent_encode(error.message)),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.trailers),
    ]
    return encode(fields)


def percent_encode(text: str) -> bytes:
    """``grpc-message``: UTF-8 with '%' and bytes outside printable ASCII as %XX, cut to
    :data:`GRPC_MESSAGE_MAX` bytes (never inside a %XX)."""
    out = bytearray()
    for byte in text.encode():
        piece = bytes([byte]) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        if len(out) + len(piece) > GRPC_MESSAGE_MAX:
            break
        out += piece
    return bytes(out)
