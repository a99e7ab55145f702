"""gRPC's unary calls over HTTP/2 (cleartext, prior knowledge), as an asyncio protocol on the
app's event loop.

grpcio's asyncio server costs more server CPU for an empty ServerLive call than the REST path
spends on a whole one-row infer (docs/benchmarks.md): each call crosses from its C core into
Python and back through several threads' worth of machinery. The protocol needs much less for a
unary call: read a HEADERS and a DATA frame, decode the message, answer with HEADERS, DATA and
trailers. This module does that, and nothing the protocol's unary calls do not need:

- **Frames**: DATA, HEADERS and CONTINUATION, SETTINGS, PING, WINDOW_UPDATE, RST_STREAM and
  GOAWAY are handled; PRIORITY and unknown frames are ignored; PUSH_PROMISE from a client is a
  protocol error. A protocol fault ends the connection with GOAWAY and its error code.
- **Header blocks**: HPACK with its dynamic table (``server.oip.hpack``); a connection's repeated
  block costs one lookup.
- **Calls**: ``POST`` with ``content-type: application/grpc``; one length-prefixed, uncompressed
  message. ``grpc-timeout`` becomes the call's deadline; the rest of the headers are the call's
  metadata. The answer is HEADERS, one DATA and trailers (``grpc-status: 0``), or on failure one
  HEADERS frame carrying the status (``grpc-status``, ``grpc-message``, trailing metadata).
- **Flow control**: the server announces stream windows larger than the largest message it
  accepts (``max_body_bytes``; a larger message is RESOURCE_EXHAUSTED as soon as it passes the
  limit) and keeps the connection's window open as data arrives. Answers respect the client's
  windows and frame size, waiting for its WINDOW_UPDATE when they do not fit.
- **Writes**: the answers that are ready in one turn of the event loop go out in one write; with
  many calls in flight on one connection, one system call carries many answers.
- **Backpressure**: when the client stops reading answers (the transport's buffer passes its high
  mark) the connection stops reading calls until it drains.
- **Limits**: ``MAX_STREAMS`` calls in flight per connection (more are refused with
  REFUSED_STREAM, which clients retry); header lists up to ``MAX_HEADER_LIST`` bytes; the preface
  must arrive within ``header_timeout_s``.
- **Shutdown**: :meth:`GrpcConnection.goaway` refuses new calls (GOAWAY with the last call taken;
  later streams get REFUSED_STREAM) and closes the connection once its running calls are answered.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import grpc
from google.protobuf.message import DecodeError

from server.oip import h2frames as h2
from server.oip.grpc_errors import Abort, GrpcError, grpc_error
from server.oip.hpack import Decoder, HpackError, encode
from server.request_meta import new_request_id

log = logging.getLogger("tabserve.grpc")

MAX_STREAMS = 256
"""Calls in flight on one connection (SETTINGS_MAX_CONCURRENT_STREAMS)."""
MAX_FRAME = 1 << 20
"""The largest frame the server reads (SETTINGS_MAX_FRAME_SIZE)."""
MAX_HEADER_LIST = 16384
"""The largest header list a call may send (SETTINGS_MAX_HEADER_LIST_SIZE)."""
MAX_HEADER_BLOCK = 65536
"""The largest header block, HEADERS and CONTINUATION frames together (encoded)."""
CONNECTION_WINDOW = 16 << 20
"""What a client may send ahead of the server's reading (the connection's receive window)."""
UNFINISHED_MESSAGES = 4
"""A connection buffers at most this many largest messages' worth of calls still arriving; the
call whose data passes it is RESOURCE_EXHAUSTED (memory stays bounded, nothing waits forever)."""
_MESSAGE_PREFIX = struct.Struct(">BL")
_CONTENT_TYPE = b"application/grpc"
_OK_HEADERS = encode([(b":status", b"200"), (b"content-type", _CONTENT_TYPE)])
_OK_TRAILERS = encode([(b"grpc-status", b"0")])
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_GRPC_MESSAGE_MAX = 4096


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


class _Headers(NamedTuple):
    """A call's header block, read once (a repeated block is the same list, read once)."""

    path: bytes
    problem: tuple[int, bytes] | None  # (HTTP status, reason) when it is not a gRPC call
    unsupported_encoding: bytes | None
    timeout: float | None
    metadata: list[tuple[str, str]]


class _Stream:
    __slots__ = (
        "answered",
        "body",
        "headers",
        "id",
        "pending",
        "remote_open",
        "size",
        "task",
        "window",
    )

    def __init__(self, stream_id: int, window: int, headers: _Headers) -> None:
        self.id = stream_id
        self.window = window  # what the client lets the server send on it
        self.headers = headers
        self.remote_open = True  # the client may still send on it
        self.body: list[bytes] = []
        self.size = 0
        self.task: asyncio.Task[None] | None = None
        self.pending = b""  # answer bytes waiting for the client's window
        self.answered = False


class Front:
    """What the connections of one listener share: the methods, limits and open connections."""

    def __init__(
        self,
        methods: dict[bytes, Method],
        *,
        max_message: int,
        preface_timeout_s: float,
        max_connections: int,
    ) -> None:
        self.methods = methods
        self.max_message = max_message
        self.preface_timeout_s = preface_timeout_s
        self.max_connections = max_connections
        self.connections: set[GrpcConnection] = set()
        self.closing = False
        self.idle = asyncio.Event()  # set whenever no connection has a call running
        self.idle.set()

    def busy(self) -> bool:
        return any(c.streams for c in self.connections)

    def goaway(self) -> None:
        self.closing = True
        for connection in list(self.connections):
            connection.goaway()

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()

    def stream_closed(self) -> None:
        if not self.busy():
            self.idle.set()


class GrpcConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.streams: dict[int, _Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._decoder = Decoder(max_list=MAX_HEADER_LIST)
        self._buffered = 0  # bytes of messages still arriving, over all streams
        self._buffer_limit = UNFINISHED_MESSAGES * (front.max_message + 5)
        self._rest = bytearray()
        self._need = 0
        self._preface = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_id = 0
        self._continuing: tuple[int, int, bytearray] | None = None
        self._recv_unacked = 0
        self._send_window = h2.DEFAULT_WINDOW
        self._peer_window = h2.DEFAULT_WINDOW
        self._peer_frame = h2.DEFAULT_MAX_FRAME
        self._blocked: dict[int, _Stream] = {}
        self._out: list[bytes] = []
        self._flush_soon = False
        self._reading = False
        self._goaway_sent = False
        self._last_fields: list[tuple[bytes, bytes]] | None = None
        self._last_headers: _Headers | None = None
        self._stream_window = min(h2.MAX_WINDOW, front.max_message + 5 + 1024)

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream_transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        front = self.front
        if front.closing or len(front.connections) >= front.max_connections:
            code = h2.NO_ERROR if front.closing else h2.ENHANCE_YOUR_CALM
            stream_transport.write(h2.settings({}) + h2.goaway(0, code))
            stream_transport.close()
            return
        self._transport = stream_transport
        front.connections.add(self)
        self._timer = self._loop.call_later(front.preface_timeout_s, self._preface_late)
        self._out.append(
            h2.settings(
                {
                    h2.SETTINGS_MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                    h2.SETTINGS_INITIAL_WINDOW_SIZE: self._stream_window,
                    h2.SETTINGS_MAX_FRAME_SIZE: MAX_FRAME,
                    h2.SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                }
            )
            + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)
        )
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        self._blocked.clear()
        self.front.connections.discard(self)
        self.front.stream_closed()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._rest:
            self._rest += data
            if len(self._rest) < self._need:
                return
            data = bytes(self._rest)
            self._rest = bytearray()
        if not self._preface and not (data := self._read_preface(data)):
            return
        self._reading = True
        pos, end = 0, len(data)
        try:
            while end - pos >= h2.HEADER_SIZE:
                hi, lo, kind, flags, stream_id = h2.HEADER.unpack_from(data, pos)
                length = (hi << 8) | lo
                if length > MAX_FRAME:
                    raise h2.ConnectionError_(h2.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                stop = pos + h2.HEADER_SIZE + length
                if stop > end:
                    break
                payload = data[pos + h2.HEADER_SIZE : stop]
                pos = stop
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
                if self._transport is None:
                    return
        except h2.ConnectionError_ as exc:
            self._fail(exc.code, exc.reason)
            return
        finally:
            self._reading = False
        if pos < end:
            self._rest = bytearray(data[pos:])
            self._need = h2.HEADER_SIZE
            if end - pos >= h2.HEADER_SIZE:
                hi, lo = data[pos], data[pos + 1] << 8 | data[pos + 2]
                self._need += (hi << 16) | lo
        if self._recv_unacked >= CONNECTION_WINDOW // 4:
            self._out.append(h2.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        self._flush()

    # --- reading --------------------------------------------------------------------------------

    def _read_preface(self, data: bytes) -> bytes:
        n = len(h2.PREFACE)
        if len(data) < n:
            if not h2.PREFACE.startswith(data):
                self.close()
                return b""
            self._rest, self._need = bytearray(data), n
            return b""
        if not data.startswith(h2.PREFACE):
            self.close()  # not HTTP/2 with prior knowledge: nothing to answer in
            return b""
        self._preface = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return data[n:] or b""

    def _preface_late(self) -> None:
        self._timer = None
        if not self._preface:
            self.close()

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and kind != h2.CONTINUATION:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a header block left unfinished")
        if kind == h2.DATA:
            self._data(flags, stream_id, payload)
        elif kind == h2.HEADERS:
            if stream_id == 0:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
            block = h2.unpad(flags, payload, "HEADERS")
            if len(block) > MAX_HEADER_BLOCK:
                raise h2.ConnectionError_(h2.ENHANCE_YOUR_CALM, "a header block over 64 KiB")
            if flags & h2.END_HEADERS:
                self._header_block(stream_id, flags, block)
            else:
                self._continuing = (stream_id, flags, bytearray(block))
        elif kind == h2.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == h2.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == h2.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == h2.PING:
            if len(payload) != 8 or stream_id:
                raise h2.ConnectionError_(h2.FRAME_SIZE_ERROR, "a PING frame not of 8 bytes")
            if not flags & h2.ACK:
                self._out.append(h2.frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.RST_STREAM:
            self._reset(stream_id, payload)
        elif kind == h2.GOAWAY:
            self._goaway_received()
        elif kind == h2.PUSH_PROMISE:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 sections 5.3.2 and 5.5)

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is None or self._continuing[0] != stream_id:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "CONTINUATION out of place")
        _, first_flags, block = self._continuing
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise h2.ConnectionError_(h2.ENHANCE_YOUR_CALM, "a header block over 64 KiB")
        if flags & h2.END_HEADERS:
            self._continuing = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            fields = self._decoder.decode(block)
        except HpackError as exc:
            raise h2.ConnectionError_(h2.COMPRESSION_ERROR, str(exc)) from None
        stream = self.streams.get(stream_id)
        if stream is not None:  # the client's trailers: they end its side
            if not flags & h2.END_STREAM:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a second HEADERS without END_STREAM")
            self._ended(stream)
            return
        if stream_id <= self._last_id:
            return  # a stream the server already reset or answered
        if not stream_id & 1:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a client stream with an even id")
        self._last_id = stream_id
        if self._goaway_sent or len(self.streams) >= MAX_STREAMS:
            self._out.append(h2.rst_stream(stream_id, h2.REFUSED_STREAM))
            return
        if fields is self._last_fields:
            headers = self._last_headers
            assert headers is not None
        else:
            headers = _read_headers(fields)
            self._last_fields, self._last_headers = fields, headers
        stream = _Stream(stream_id, self._peer_window, headers)
        self.streams[stream_id] = stream
        self.front.idle.clear()
        if flags & h2.END_STREAM:
            self._ended(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "DATA on stream 0")
        self._recv_unacked += len(payload)
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            if stream_id > self._last_id:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "DATA on a stream never opened")
            return  # the server answered or reset it already: dropped
        data = h2.unpad(flags, payload, "DATA")
        stream.size += len(data)
        self._buffered += len(data)
        if stream.size > self.front.max_message + 5:
            limit = self.front.max_message
            message = (
                f"the request message is over the limit of {limit} bytes (TABSERVE_MAX_BODY_BYTES)"
            )
        elif self._buffered > self._buffer_limit:
            message = (
                f"more than {self._buffer_limit} bytes of calls still arriving on this "
                "connection; send fewer large calls at once"
            )
        else:
            stream.body.append(data)
            if flags & h2.END_STREAM:
                self._ended(stream)
            return
        self._answer_error(stream, GrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, 413))

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise h2.ConnectionError_(h2.FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
        increment = h2.u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a window increment of 0")
            self._send_window += increment
            if self._send_window > h2.MAX_WINDOW:
                raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "a window over 2^31-1")
            for blocked in list(self._blocked.values()):
                self._push(blocked)
            return
        stream = self.streams.get(stream_id)
        if stream is not None and increment:
            stream.window += increment
            if stream.pending:
                self._push(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            return
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "a window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_frame = value
        self._out.append(h2.SETTINGS_ACK)
        for stream in list(self._blocked.values()):
            self._push(stream)

    def _reset(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise h2.ConnectionError_(h2.FRAME_SIZE_ERROR, "a RST_STREAM not of 4 bytes")
        if stream_id == 0 or stream_id > self._last_id:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "RST_STREAM on a stream never opened")
        stream = self.streams.get(stream_id)
        if stream is not None:
            if stream.task is not None:
                stream.task.cancel()  # the client gave up (cancelled, or its deadline passed)
            self._forget(stream)

    def _goaway_received(self) -> None:
        self._goaway_sent = True  # the client leaves: take no new calls, finish the running ones
        if not self.streams:
            self.close()

    # --- calls ----------------------------------------------------------------------------------

    def _ended(self, stream: _Stream) -> None:
        """The client's side of ``stream`` is complete: run the call."""
        stream.remote_open = False
        self._buffered -= stream.size
        if stream.answered:
            return
        headers = stream.headers
        if headers.problem is not None:
            status, reason = headers.problem
            self._answer_http(stream, status, reason)
            return
        body = b"".join(stream.body) if len(stream.body) != 1 else stream.body[0]
        stream.body = []
        error = self._check_message(headers, body)
        if error is not None:
            self._answer_error(stream, error)
            return
        method = self.front.methods[headers.path]
        try:
            request = method.parse(body[5:])
        except DecodeError:
            self._answer_error(
                stream, _invalid("the request message is not a valid protocol buffer of its type")
            )
            return
        deadline = None if headers.timeout is None else time.monotonic() + headers.timeout
        call = Call(headers.metadata, deadline)
        if method.waits:
            stream.task = self._loop.create_task(self._run(stream, method, request, call))
            return
        try:
            response = method.handler(request, call)
        except Abort as abort:
            self._answer_error(stream, abort.error)
        except Exception as exc:  # a bug: logged by grpc_error, answered INTERNAL
            self._answer_error(stream, grpc_error(exc, new_request_id()))
        else:
            self._answer(stream, response.SerializeToString())

    def _check_message(self, headers: _Headers, body: bytes) -> GrpcError | None:
        if headers.path not in self.front.methods:
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
            )
        if len(body) < 5:
            return _invalid("a unary call carries one length-prefixed message; none arrived")
        compressed, length = _MESSAGE_PREFIX.unpack_from(body)
        if compressed:
            return GrpcError(
                grpc.StatusCode.UNIMPLEMENTED,
                "compressed messages are not supported; send messages uncompressed (identity)",
                400,
            )
        if length != len(body) - 5:
            return _invalid(
                f"a unary call carries one message: its prefix says {length} bytes, "
                f"{len(body) - 5} arrived"
            )
        return None

    async def _run(self, stream: _Stream, method: Method, request: Any, call: Call) -> None:
        try:
            response = await method.handler(request, call)
        except Abort as abort:
            self._answer_error(stream, abort.error)
        except asyncio.CancelledError:
            return  # the client reset the stream, or the connection is gone
        except Exception as exc:
            self._answer_error(stream, grpc_error(exc, new_request_id()))
        else:
            self._answer(stream, response.SerializeToString())

    # --- writing --------------------------------------------------------------------------------

    def _answer(self, stream: _Stream, message: bytes) -> None:
        if stream.answered or self._transport is None:
            return
        stream.answered = True
        data = _MESSAGE_PREFIX.pack(0, len(message)) + message
        n = len(data)
        sid = stream.id
        headers = h2.frame(h2.HEADERS, h2.END_HEADERS, sid, _OK_HEADERS)
        if n <= stream.window and n <= self._send_window and n <= self._peer_frame:
            stream.window -= n
            self._send_window -= n
            self._send(
                headers
                + h2.frame(h2.DATA, 0, sid, data)
                + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, _OK_TRAILERS)
            )
            self._forget(stream)
            return
        self._send(headers)
        stream.pending = data
        self._push(stream)

    def _push(self, stream: _Stream) -> None:
        """Send what the windows allow of ``stream``'s answer; the trailers once it is all out."""
        pending, sid = stream.pending, stream.id
        while pending and stream.window > 0 and self._send_window > 0:
            n = min(len(pending), stream.window, self._send_window, self._peer_frame)
            self._send(h2.frame(h2.DATA, 0, sid, pending[:n]))
            pending = pending[n:]
            stream.window -= n
            self._send_window -= n
        stream.pending = pending
        if pending:
            self._blocked[sid] = stream
            return
        self._blocked.pop(sid, None)
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, _OK_TRAILERS))
        self._forget(stream)

    def _answer_error(self, stream: _Stream, error: GrpcError) -> None:
        if stream.answered or self._transport is None:
            return
        stream.answered = True
        message = _percent_encode(error.message[:_GRPC_MESSAGE_MAX])
        fields = [
            (b":status", b"200"),
            (b"content-type", _CONTENT_TYPE),
            (b"grpc-status", str(error.code.value[0]).encode()),
            (b"grpc-message", message),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.trailers),
        ]
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, encode(fields)))
        self._close_early(stream)

    def _answer_http(self, stream: _Stream, status: int, reason: bytes) -> None:
        """Not a gRPC call: an HTTP status, as the protocol's HTTP mapping says."""
        stream.answered = True
        fields = [(b":status", str(status).encode()), (b"content-type", b"text/plain")]
        sid = stream.id
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, encode(fields)))
        self._send(h2.frame(h2.DATA, h2.END_STREAM, sid, reason[: self._peer_frame]))
        self._close_early(stream)

    def _close_early(self, stream: _Stream) -> None:
        """The server's side is closed; if the client is still sending, tell it to stop."""
        if stream.remote_open:
            self._send(h2.rst_stream(stream.id, h2.NO_ERROR))
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        if stream.remote_open:  # its data will never be read
            self._buffered -= stream.size
            stream.remote_open = False
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if not self.streams:
            self.front.stream_closed()
            if self._goaway_sent:
                self._flush()
                self.close()

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._reading and not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._out and self._transport is not None:
            out = self._out
            self._out = []
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    # --- ending ---------------------------------------------------------------------------------

    def goaway(self) -> None:
        """Take no new calls; close once the running ones are answered."""
        if self._transport is None or self._goaway_sent:
            return
        self._goaway_sent = True
        self._send(h2.goaway(self._last_id, h2.NO_ERROR))
        if not self.streams:
            self._flush()
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()
            self._transport = None

    def _fail(self, code: int, reason: str) -> None:
        log.info("event=grpc_protocol_error code=%d reason=%r", code, reason)
        self._out.append(h2.goaway(self._last_id, code, reason.encode()[:256]))
        self.close()


def _read_headers(fields: list[tuple[bytes, bytes]]) -> _Headers:
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
    elif not content_type.startswith(_CONTENT_TYPE):
        problem = (415, b"gRPC calls have content-type application/grpc")
    return _Headers(path, problem, encoding, timeout, metadata)


def _timeout(value: bytes) -> float | None:
    """``grpc-timeout`` in seconds: up to 8 digits and a unit (H, M, S, m, u, n)."""
    digits, unit = value[:-1], _TIMEOUT_UNITS.get(value[-1:])
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _percent_encode(text: str) -> bytes:
    """``grpc-message``: UTF-8, with '%' and bytes outside printable ASCII as %XX."""
    raw = text.encode()
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _invalid(message: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, message, 400)
