"""HTTP/2 frames (RFC 9113 section 4 and 6): the types, flags, settings and error codes the gRPC
front uses, and builders for the frames it sends."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER = struct.Struct(">HBBBL")
"""length (24 bits, as 16 + 8), type, flags, stream id (the top bit is reserved)."""
HEADER_SIZE = HEADER.size

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1

_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")


class ConnectionError_(Exception):
    """A fault that ends the connection with GOAWAY and ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEADER.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ConnectionError_(FRAME_SIZE_ERROR, "a SETTINGS frame whose length is not 6n")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream) + _U32.pack(code) + debug)


def u32(payload: bytes, offset: int = 0) -> int:
    """The 31-bit value at ``offset`` (a window increment, a stream id, an error code)."""
    value: int = _U32.unpack_from(payload, offset)[0]
    return value


def unpad(flags: int, payload: bytes, kind: str) -> bytes:
    """A DATA or HEADERS payload without its padding (and HEADERS without its priority)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise ConnectionError_(PROTOCOL_ERROR, f"a padded {kind} frame without a pad length")
        start, end = 1, end - payload[0]
    if kind == "HEADERS" and flags & PRIORITY_FLAG:
        start += 5
    if end < start:
        raise ConnectionError_(PROTOCOL_ERROR, f"a {kind} frame's padding exceeds the frame")
    return payload[start:end] if start or end != len(payload) else payload
