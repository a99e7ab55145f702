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
- **Calls** (``server.oip.grpc_call``): ``POST`` with ``content-type: application/grpc``; one
  length-prefixed, uncompressed message. ``grpc-timeout`` becomes the call's deadline; the rest of
  the headers are the call's metadata. The answer is HEADERS, one DATA and trailers
  (``grpc-status: 0``), or on failure one HEADERS frame carrying the status.
- **Flow control, receiving**: each call may send 64 KiB ahead; a larger message gets more
  window as it arrives, oldest call first, while the connection's calls still arriving hold at
  most ``UNFINISHED_MESSAGES`` largest messages (the oldest call always gets its window, so none
  waits forever). A message over ``max_body_bytes`` is RESOURCE_EXHAUSTED as soon as it passes
  the limit. The connection's own window stays open (the streams' windows bound what arrives).
- **Flow control, sending**: answers respect the client's windows and frame size, waiting for its
  WINDOW_UPDATE when they do not fit.
- **Writes**: the answers that are ready in one turn of the event loop go out in one write; with
  many calls in flight on one connection, one system call carries many answers.
- **Backpressure**: when the client stops reading answers (the transport's buffer passes its high
  mark) the connection stops reading calls until it drains.
- **Limits**: ``MAX_STREAMS`` calls in flight per connection (more are refused with
  REFUSED_STREAM, which clients retry); header lists up to ``MAX_HEADER_LIST`` bytes; the preface
  must arrive within ``header_timeout_s``; a connection with no call for ``IDLE_S`` is closed
  (GOAWAY, which clients answer by reconnecting when they next call).
- **Shutdown**: :meth:`GrpcConnection.goaway` refuses new calls (GOAWAY with the last call taken;
  later streams get REFUSED_STREAM) and ends the connection once its running calls are answered:
  the server's side is shut after its last bytes, and the socket closes when the client closes its
  side (or after ``LINGER_S``), so no answer is lost to a reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from server.activity import ACTIVITY
from server.oip import h2frames as h2
from server.oip.grpc_call import (
    MESSAGE_PREFIX,
    OK_HEADERS,
    OK_TRAILERS,
    Call,
    CallHeaders,
    Method,
    check_message,
    invalid,
    read_headers,
    status_block,
)
from server.oip.grpc_errors import Abort, GrpcError, grpc_error
from server.oip.hpack import Decoder, Field, HpackError, encode
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
MAX_SETTINGS = 32
"""Entries in one SETTINGS frame at most (there are six settings)."""
STREAM_WINDOW = h2.DEFAULT_WINDOW
"""What a call may send before the server grants more (the protocol's default)."""
GRANT = 1 << 20
"""A call's window grows by up to this much at a time."""
UNFINISHED_MESSAGES = 4
"""Windows are granted while the connection's calls still arriving hold at most this many
largest messages (``max_body_bytes``)."""
CONNECTION_WINDOW = 16 << 20
"""The connection's receive window, topped up as data arrives."""
IDLE_S = 300.0
"""A connection with no call for this long is closed (GOAWAY)."""
LINGER_S = 2.0
"""After the server's side is shut, how long the client has to close its side."""


class _Stream:
    __slots__ = (
        "answered",
        "body",
        "headers",
        "id",
        "pending",
        "recv_window",
        "remote_open",
        "size",
        "task",
        "window",
    )

    def __init__(self, stream_id: int, window: int, headers: CallHeaders) -> None:
        self.id = stream_id
        self.window = window  # what the client lets the server send on it
        self.recv_window = STREAM_WINDOW  # what the server lets the client send on it
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
        self.active = 0  # connections with a call running
        self.idle = asyncio.Event()  # set whenever no connection has a call running
        self.idle.set()

    def goaway(self) -> None:
        self.closing = True
        for connection in list(self.connections):
            connection.goaway()

    def abort_all(self) -> None:
        for connection in list(self.connections):
            connection.abort()

    def calls_running(self) -> int:
        return sum(len(c.streams) for c in self.connections)

    def busy_changed(self, busy: bool) -> None:
        self.active += 1 if busy else -1
        if self.active:
            self.idle.clear()
        else:
            self.idle.set()


class GrpcConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.streams: dict[int, _Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._decoder = Decoder(max_list=MAX_HEADER_LIST)
        self._budget = max(
            UNFINISHED_MESSAGES * (front.max_message + 5), MAX_STREAMS * STREAM_WINDOW
        )
        self._committed = 0  # size + recv_window over the streams still arriving
        self._wanting: dict[int, _Stream] = {}  # streams waiting for more window
        self._rest = bytearray()
        self._need = 0
        self._preface = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
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
        self._shut = False  # the server's side is shut: what arrives is dropped
        self._last_fields: list[Field] | None = None
        self._last_headers: CallHeaders | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream_transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        front = self.front
        self._transport = stream_transport
        if front.closing or len(front.connections) >= front.max_connections:
            code = h2.NO_ERROR if front.closing else h2.ENHANCE_YOUR_CALM
            self._out.append(h2.settings({}) + h2.goaway(0, code))
            self._goaway_sent = True
            self._shutdown()
            return
        front.connections.add(self)
        self._timer = self._loop.call_later(front.preface_timeout_s, self._preface_late)
        self._out.append(
            h2.settings(
                {
                    h2.SETTINGS_MAX_CONCURRENT_STREAMS: MAX_STREAMS,
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
            self._timer = None
        if self.streams:
            for stream in self.streams.values():
                if stream.task is not None:
                    stream.task.cancel()
            self.streams.clear()
            self.front.busy_changed(False)
        self._blocked.clear()
        self._wanting.clear()
        self.front.connections.discard(self)

    def eof_received(self) -> bool:
        return False  # the client closed its side: close the connection

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        ACTIVITY.reads += 1  # for the loop's background work (server.activity)
        if self._shut:
            return
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
                if self._shut:
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
        if self._wanting:
            self._grant()
        if self._recv_unacked >= CONNECTION_WINDOW // 4:
            self._out.append(h2.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        self._flush()

    # --- reading --------------------------------------------------------------------------------

    def _read_preface(self, data: bytes) -> bytes:
        n = len(h2.PREFACE)
        if len(data) < n:
            if not h2.PREFACE.startswith(data):
                self._shutdown()
                return b""
            self._rest, self._need = bytearray(data), n
            return b""
        if not data.startswith(h2.PREFACE):
            self._shutdown()  # not HTTP/2 with prior knowledge: nothing to answer in
            return b""
        self._preface = True
        self._last_active = self._loop.time()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(IDLE_S, self._idle_check)
        return data[n:] or b""

    def _preface_late(self) -> None:
        self._timer = None
        if not self._preface:
            self._shutdown()

    def _idle_check(self) -> None:
        self._timer = None
        if self._transport is None or self._goaway_sent:
            return
        left = self._last_active + IDLE_S - self._loop.time()
        if self.streams or left > 0:
            self._timer = self._loop.call_later(max(left, 1.0), self._idle_check)
            return
        self.goaway()

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
            if stream_id:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
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
            if not stream.remote_open:
                return  # its side had ended already (RFC 9113 5.1: STREAM_CLOSED; dropped)
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
            headers = read_headers(fields)
            self._last_fields, self._last_headers = fields, headers
        stream = _Stream(stream_id, self._peer_window, headers)
        if not self.streams:
            self.front.busy_changed(True)
        self.streams[stream_id] = stream
        self._committed += STREAM_WINDOW
        if flags & h2.END_STREAM:
            self._ended(stream)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "DATA on stream 0")
        n = len(payload)
        self._recv_unacked += n
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            if stream_id > self._last_id:
                raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "DATA on a stream never opened")
            return  # the server answered or reset it already: dropped
        if n > stream.recv_window:
            raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "DATA past the stream's window")
        data = h2.unpad(flags, payload, "DATA")
        stream.recv_window -= n
        stream.size += len(data)
        self._committed -= n - len(data)  # padding: counted against the window, not kept
        limit = self.front.max_message
        if stream.size > limit + 5:
            self._answer_error(
                stream,
                GrpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request message is over the limit of {limit} bytes "
                    "(TABSERVE_MAX_BODY_BYTES)",
                    413,
                ),
            )
            return
        stream.body.append(data)
        if flags & h2.END_STREAM:
            self._ended(stream)
        elif stream.recv_window < STREAM_WINDOW // 2:
            self._wanting[stream_id] = stream

    def _grant(self) -> None:
        """More window for the streams that want it, oldest first, within the budget; the
        oldest stream still arriving gets it regardless, so it can finish (what is buffered stays
        under the budget plus one message)."""
        oldest = next((s for s in self.streams.values() if s.remote_open), None)
        for stream_id in sorted(self._wanting):
            stream = self._wanting[stream_id]
            if not stream.remote_open or self.streams.get(stream_id) is not stream:
                del self._wanting[stream_id]
                continue
            grant = min(GRANT, self.front.max_message + 6 - stream.size - stream.recv_window)
            if grant <= 0:  # it may send one byte past the limit, to be refused
                del self._wanting[stream_id]
                continue
            if stream is not oldest and self._committed + grant > self._budget:
                break
            del self._wanting[stream_id]
            stream.recv_window += grant
            self._committed += grant
            self._send(h2.window_update(stream_id, grant))

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
        if stream_id > self._last_id:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "WINDOW_UPDATE on a stream never opened")
        stream = self.streams.get(stream_id)
        if stream is not None and increment:
            stream.window += increment
            if stream.window > h2.MAX_WINDOW:
                raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "a window over 2^31-1")
            if stream.pending:
                self._push(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            return
        if len(payload) > 6 * MAX_SETTINGS:
            raise h2.ConnectionError_(h2.ENHANCE_YOUR_CALM, "a SETTINGS frame that long")
        window = self._peer_window
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "a window over 2^31-1")
                window = value
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise h2.ConnectionError_(h2.PROTOCOL_ERROR, "a bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_frame = value
        if window != self._peer_window:
            delta, self._peer_window = window - self._peer_window, window
            for stream in self.streams.values():
                stream.window += delta
                if stream.window > h2.MAX_WINDOW:
                    raise h2.ConnectionError_(h2.FLOW_CONTROL_ERROR, "a window over 2^31-1")
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
            self._shutdown()

    # --- calls ----------------------------------------------------------------------------------

    def _ended(self, stream: _Stream) -> None:
        """The client's side of ``stream`` is complete: run the call."""
        if not stream.remote_open:
            return
        stream.remote_open = False
        self._committed -= stream.size + stream.recv_window
        if self._wanting:
            self._wanting.pop(stream.id, None)
            self._grant()
        headers = stream.headers
        if headers.problem is not None:
            status, reason = headers.problem
            self._answer_http(stream, status)
            log.debug("event=grpc_not_a_call status=%d reason=%r", status, reason)
            return
        body = b"".join(stream.body) if len(stream.body) != 1 else stream.body[0]
        stream.body = []
        methods = self.front.methods
        error = check_message(headers, body, methods)
        if error is not None:
            self._answer_error(stream, error)
            return
        method = methods[headers.path]
        try:
            request = method.parse(body[5:])
        except DecodeError:
            self._answer_error(
                stream, invalid("the request message is not a valid protocol buffer of its type")
            )
            return
        deadline = None if headers.timeout is None else time.monotonic() + headers.timeout
        call = Call(headers.metadata, deadline)
        if method.waits:
            stream.task = self._loop.create_task(self._run(stream, method, request, call))
            return
        try:
            self._answer(stream, method.handler(request, call).SerializeToString())
        except Abort as abort:
            self._answer_error(stream, abort.error)
        except Exception as exc:  # a bug: logged by grpc_error, answered INTERNAL
            self._answer_error(stream, grpc_error(exc, new_request_id()))

    async def _run(self, stream: _Stream, method: Method, request: Any, call: Call) -> None:
        try:
            response = await method.handler(request, call)
            self._answer(stream, response.SerializeToString())
        except Abort as abort:
            self._answer_error(stream, abort.error)
        except asyncio.CancelledError:
            return  # the client reset the stream, or the connection is gone
        except Exception as exc:
            self._answer_error(stream, grpc_error(exc, new_request_id()))

    # --- writing --------------------------------------------------------------------------------

    def _answer(self, stream: _Stream, message: bytes) -> None:
        if stream.answered:
            return
        stream.answered = True
        if self._transport is None or self._shut:
            self._forget(stream)
            return
        data = MESSAGE_PREFIX.pack(0, len(message)) + message
        n = len(data)
        sid = stream.id
        headers = h2.frame(h2.HEADERS, h2.END_HEADERS, sid, OK_HEADERS)
        if n <= stream.window and n <= self._send_window and n <= self._peer_frame:
            stream.window -= n
            self._send_window -= n
            self._send(
                headers
                + h2.frame(h2.DATA, 0, sid, data)
                + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, OK_TRAILERS)
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
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, OK_TRAILERS))
        self._forget(stream)

    def _answer_error(self, stream: _Stream, error: GrpcError) -> None:
        if stream.answered:
            return
        stream.answered = True
        if self._transport is not None and not self._shut:
            block = status_block(error)
            self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, block))
            if stream.remote_open:  # the client is still sending: tell it to stop
                self._send(h2.rst_stream(stream.id, h2.NO_ERROR))
        self._forget(stream)

    def _answer_http(self, stream: _Stream, status: int) -> None:
        """Not a gRPC call: an HTTP status alone, as the protocol's HTTP mapping says."""
        stream.answered = True
        block = encode([(b":status", str(status).encode())])
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, block))
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        if stream.remote_open:  # its data will never be read
            stream.remote_open = False
            self._committed -= stream.size + stream.recv_window
        if self.streams.pop(stream.id, None) is None:
            return
        self._blocked.pop(stream.id, None)
        if self._wanting:
            self._wanting.pop(stream.id, None)
            self._grant()
        if not self.streams:
            self._last_active = self._loop.time()
            self.front.busy_changed(False)
            if self._goaway_sent:
                self._shutdown()

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._reading and not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._out and self._transport is not None and not self._shut:
            out = self._out
            self._out = []
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    # --- ending ---------------------------------------------------------------------------------

    def goaway(self) -> None:
        """Take no new calls; end the connection once the running ones are answered."""
        if self._transport is None or self._goaway_sent:
            return
        self._goaway_sent = True
        self._send(h2.goaway(self._last_id, h2.NO_ERROR))
        if not self.streams:
            self._shutdown()

    def _shutdown(self) -> None:
        """Send what is left, shut the server's side, and let the client close its own (the
        socket closes then, or after LINGER_S): closing with unread input would reset it and
        could lose the last answers."""
        transport = self._transport
        if transport is None or self._shut:
            return
        self._flush()
        self._shut = True
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover (TCP can)
            transport.close()
        self._loop.call_later(LINGER_S, self.abort)

    def abort(self) -> None:
        """Close at once, dropping what is unsent (a peer that is gone, or a stop timeout)."""
        if self._transport is not None:
            self._shut = True
            self._transport.abort()

    def _fail(self, code: int, reason: str) -> None:
        log.info("event=grpc_protocol_error code=%d reason=%r", code, reason)
        self._out.append(h2.goaway(self._last_id, code, reason.encode()[:256]))
        self._goaway_sent = True
        self._shutdown()
