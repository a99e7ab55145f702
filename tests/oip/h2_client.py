"""A raw HTTP/2 client for the gRPC front's tests: frames as bytes on a socket, so a test can send
what no well-behaved client sends (bad prefaces, broken header blocks, small windows, resets)."""

from __future__ import annotations

import asyncio
import struct
from typing import NamedTuple

import hpack

from server.oip import h2frames as h2

INFER = b"/inference.GRPCInferenceService/ModelInfer"
LIVE = b"/inference.GRPCInferenceService/ServerLive"


class Frame(NamedTuple):
    kind: int
    flags: int
    stream: int
    payload: bytes


class Answer(NamedTuple):
    headers: dict[bytes, bytes]
    message: bytes
    trailers: dict[bytes, bytes]

    @property
    def status(self) -> int:
        return int((self.trailers or self.headers).get(b"grpc-status", b"-1"))


def message(body: bytes, compressed: int = 0) -> bytes:
    """A length-prefixed gRPC message."""
    return struct.pack(">BL", compressed, len(body)) + body


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.next_stream = 1
        self.server_settings: dict[int, int] = {}
        self.stashed: dict[int, list[Frame]] = {}  # read while waiting on another stream
        self.send_window = h2.DEFAULT_WINDOW  # the connection's, as the server grants it
        self.stream_windows: dict[int, int] = {}

    @classmethod
    async def connect(
        cls, port: int, settings: dict[int, int] | None = None, preface: bool = True
    ) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if preface:
            client.send(h2.PREFACE + h2.settings(settings or {}))
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()

    def headers(
        self,
        stream: int,
        path: bytes = INFER,
        extra: list[tuple[bytes, bytes]] | None = None,
        *,
        method: bytes = b"POST",
        content_type: bytes = b"application/grpc",
        end_stream: bool = False,
    ) -> bytes:
        fields = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"localhost"),
            (b"content-type", content_type),
            (b"te", b"trailers"),
            *(extra or []),
        ]
        flags = h2.END_HEADERS | (h2.END_STREAM if end_stream else 0)
        return h2.frame(h2.HEADERS, flags, stream, self.encoder.encode(fields))

    def call(
        self,
        body: bytes,
        path: bytes = INFER,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """Send one unary call (HEADERS, then the message in one DATA frame); its stream id."""
        stream = self.new_stream()
        self.send(
            self.headers(stream, path, extra)
            + h2.frame(h2.DATA, h2.END_STREAM, stream, message(body))
        )
        return stream

    async def send_message(self, stream: int, body: bytes) -> int:
        """Send ``body`` as the stream's message within the server's windows, waiting for its
        WINDOW_UPDATE frames; the number of waits."""
        data, waits = message(body), 0
        start = self.server_settings.get(h2.SETTINGS_INITIAL_WINDOW_SIZE, h2.DEFAULT_WINDOW)
        self.stream_windows.setdefault(stream, start)
        while data:
            room = min(self.stream_windows[stream], self.send_window, h2.DEFAULT_MAX_FRAME)
            if room <= 0:
                waits += 1
                frame = await self.frame()
                if frame.kind != h2.WINDOW_UPDATE and frame.stream:
                    self.stashed.setdefault(frame.stream, []).append(frame)
                continue
            chunk, data = data[:room], data[room:]
            self.stream_windows[stream] -= len(chunk)
            self.send_window -= len(chunk)
            self.send(h2.frame(h2.DATA, 0 if data else h2.END_STREAM, stream, chunk))
        return waits

    def new_stream(self) -> int:
        stream = self.next_stream
        self.next_stream += 2
        return stream

    async def frame(self, wait_s: float = 10.0) -> Frame:
        head = await asyncio.wait_for(self.reader.readexactly(h2.HEADER_SIZE), wait_s)
        hi, lo, kind, flags, stream = h2.HEADER.unpack(head)
        length = (hi << 8) | lo
        payload = await asyncio.wait_for(self.reader.readexactly(length), wait_s)
        frame = Frame(kind, flags, stream & 0x7FFFFFFF, payload)
        if kind == h2.WINDOW_UPDATE:
            increment = h2.u32(payload)
            if frame.stream:
                start = self.server_settings.get(h2.SETTINGS_INITIAL_WINDOW_SIZE, h2.DEFAULT_WINDOW)
                self.stream_windows[frame.stream] = (
                    self.stream_windows.get(frame.stream, start) + increment
                )
            else:
                self.send_window += increment
        if kind == h2.SETTINGS and not flags & h2.ACK:
            self.server_settings.update(h2.parse_settings(payload))
            self.send(h2.SETTINGS_ACK)
        return frame

    async def closed(self, wait_s: float = 10.0) -> list[Frame]:
        """The frames until the server closes the connection (then closes this end too)."""
        frames = []
        while True:
            try:
                frames.append(await self.frame(wait_s))
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close()
                return frames

    async def answer(self, stream: int, *, open_windows: bool = True) -> Answer:
        """The server's answer on ``stream`` (other streams' frames are kept for their turn);
        with ``open_windows`` every DATA frame read is given back to both windows at once."""
        headers: dict[bytes, bytes] = {}
        data = b""
        while True:
            kept = self.stashed.get(stream)
            frame = kept.pop(0) if kept else await self.frame()
            if frame.kind == h2.GOAWAY:
                raise ConnectionError(f"GOAWAY code {h2.u32(frame.payload, 4)}")
            if frame.stream != stream:
                if frame.stream:
                    self.stashed.setdefault(frame.stream, []).append(frame)
                continue
            if frame.kind == h2.RST_STREAM and not headers:
                raise ConnectionError(f"RST_STREAM code {h2.u32(frame.payload)}")
            if frame.kind == h2.DATA:
                data += frame.payload
                if open_windows and frame.payload:
                    n = len(frame.payload)
                    self.send(h2.window_update(0, n) + h2.window_update(stream, n))
            if frame.kind == h2.HEADERS:
                fields = {
                    bytes(k): bytes(v) for k, v in self.decoder.decode(frame.payload, raw=True)
                }
                if frame.flags & h2.END_STREAM:
                    if not headers:  # trailers-only
                        return Answer(fields, b"", {})
                    return Answer(headers, data[5:], fields)
                headers = fields
            if frame.kind == h2.DATA and frame.flags & h2.END_STREAM:
                return Answer(headers, data, {})

    async def ping(self) -> Frame:
        self.send(h2.frame(h2.PING, 0, 0, b"12345678"))
        while True:
            frame = await self.frame()
            if frame.kind == h2.PING:
                return frame
