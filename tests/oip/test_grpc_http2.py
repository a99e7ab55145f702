"""The gRPC front's HTTP/2, frame by frame: flow control, faults, limits, resets and shutdown,
against the app's lifespan in the test's event loop (grpcio and tritonclient drive the same front
in test_grpc.py and test_tritonclient.py)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.app import create_app
from server.oip import grpc_predict_v2_pb2 as pb
from server.oip import h2frames as h2
from server.oip.extension import GrpcExtension
from server.oip.grpc_connection import MAX_STREAMS
from server.settings import Settings
from tests.oip.h2_client import INFER, LIVE, H2Client, message
from tests.support.ports import free_port

OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED = 0, 3, 8, 12
LIVE_REQUEST = pb.ServerLiveRequest().SerializeToString()

Serve = Callable[..., AbstractAsyncContextManager[GrpcExtension]]


@pytest.fixture
def serve(model_repo: Path, caplog: pytest.LogCaptureFixture) -> Serve:
    """The app with its gRPC port; fails the test if the event loop saw an unhandled error."""

    @asynccontextmanager
    async def _serve(**overrides: Any) -> AsyncIterator[GrpcExtension]:
        loop = asyncio.get_running_loop()
        seen: list[dict[str, Any]] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _, context: seen.append(context))
        settings = Settings(models_dir=model_repo, grpc_port=free_port(), **overrides)
        extension = GrpcExtension(settings)
        try:
            async with create_app(settings, extensions=[extension]).lifespan():
                yield extension
        finally:
            loop.set_exception_handler(previous)
        assert not seen, seen
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]

    return _serve


def port(extension: GrpcExtension) -> int:
    assert extension.port is not None
    return extension.port


def infer_request(model_repo: Path, n: int) -> bytes:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = np.resize(data["X"].astype("<f4"), (n, data["X"].shape[1]))
    request = pb.ModelInferRequest(model_name="xgb_small", raw_input_contents=[rows.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    return request.SerializeToString()


async def live_call_works(extension: GrpcExtension) -> None:
    client = await H2Client.connect(port(extension))
    answer = await client.answer(client.call(LIVE_REQUEST, LIVE))
    client.close()
    assert answer.status == OK and pb.ServerLiveResponse.FromString(answer.message).live


async def test_idle_connections_are_closed_and_the_cap_holds(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.oip import grpc_connection

    monkeypatch.setattr(grpc_connection, "IDLE_S", 0.3)
    async with serve(max_connections=1) as grpc:
        first = await H2Client.connect(port(grpc))
        assert (await first.answer(first.call(LIVE_REQUEST, LIVE))).status == OK
        second = await H2Client.connect(port(grpc))  # over the cap: turned away
        goaway = [f for f in await second.closed() if f.kind == h2.GOAWAY]
        assert h2.u32(goaway[0].payload, 4) == h2.ENHANCE_YOUR_CALM
        frames = await first.closed()  # idle past IDLE_S: GOAWAY, then closed
        goaway = [f for f in frames if f.kind == h2.GOAWAY]
        assert (h2.u32(goaway[0].payload), h2.u32(goaway[0].payload, 4)) == (1, h2.NO_ERROR)
        assert grpc.front is not None
        for _ in range(100):  # until the server saw the client close
            if not grpc.front.connections:
                break
            await asyncio.sleep(0.01)
        await live_call_works(grpc)  # the cap counts open connections only


async def test_unary_calls_over_raw_frames(serve: Serve, model_repo: Path) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        live = await client.answer(client.call(LIVE_REQUEST, LIVE))
        assert live.headers[b":status"] == b"200"
        assert live.headers[b"content-type"] == b"application/grpc"
        assert live.status == OK and pb.ServerLiveResponse.FromString(live.message).live
        # two calls in flight on one connection, answered on their own streams
        first = client.call(infer_request(model_repo, 3))
        second = client.call(infer_request(model_repo, 5))
        answer = await client.answer(second)
        reply = pb.ModelInferResponse.FromString(answer.message)
        assert list(reply.outputs[0].shape) == [5, 2]
        assert (await client.answer(first)).status == OK
        assert (await client.ping()).flags & h2.ACK
        client.close()


async def test_answers_wait_for_the_clients_windows(serve: Serve, model_repo: Path) -> None:
    # 6,000 rows answer about 96 KB: over the stream window the client announces (1,000 bytes)
    # and over the connection's initial 65,535
    async with serve() as grpc:
        small = {h2.SETTINGS_INITIAL_WINDOW_SIZE: 1000}
        client = await H2Client.connect(port(grpc), small)
        stream = client.new_stream()
        client.send(client.headers(stream, INFER))
        await client.send_message(stream, infer_request(model_repo, 6000))
        sent, first = 0, b""
        while sent < 1000:
            frame = await client.frame()
            if frame.kind == h2.DATA:
                sent += len(frame.payload)
                first += frame.payload
        assert sent == 1000
        with pytest.raises(TimeoutError):  # nothing more until the client opens its window
            await client.frame(wait_s=0.3)
        client.send(h2.window_update(stream, 1 << 24))
        while sent < h2.DEFAULT_WINDOW:
            frame = await client.frame()
            assert frame.kind == h2.DATA and len(frame.payload) <= h2.DEFAULT_MAX_FRAME
            sent += len(frame.payload)
            first += frame.payload
        assert sent == h2.DEFAULT_WINDOW  # the connection's window, to the byte
        with pytest.raises(TimeoutError):
            await client.frame(wait_s=0.3)
        client.send(h2.window_update(0, 1 << 24))
        data = b""
        while True:
            frame = await client.frame()
            if frame.kind == h2.DATA:
                data += frame.payload
            elif frame.kind == h2.HEADERS:
                break
        trailers = dict(client.decoder.decode(frame.payload))
        client.close()
    assert frame.flags & h2.END_STREAM and trailers["grpc-status"] == "0"
    assert len(first + data) == 5 + int.from_bytes(first[1:5])  # every byte, once
    reply = pb.ModelInferResponse.FromString((first + data)[5:])
    assert [list(o.shape) for o in reply.outputs] == [[6000, 2], [6000]]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (h2.HEADER.pack(0x1000, 0x01, h2.DATA, 0, 1), h2.FRAME_SIZE_ERROR),  # a 1 MiB + 1 frame
        (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\x80"), h2.COMPRESSION_ERROR),
        (h2.frame(h2.DATA, 0, 5, b"x"), h2.PROTOCOL_ERROR),  # a stream never opened
        (h2.frame(h2.HEADERS, h2.END_HEADERS, 2, b"\x83"), h2.PROTOCOL_ERROR),  # even id
        (h2.frame(h2.PUSH_PROMISE, 0, 1, b"\0\0\0\2"), h2.PROTOCOL_ERROR),
        (h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, b"\x83"), h2.PROTOCOL_ERROR),
        (h2.frame(h2.SETTINGS, 0, 0, b"\0" * 5), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.PING, 0, 0, b"1234"), h2.FRAME_SIZE_ERROR),
        (h2.window_update(0, 0), h2.PROTOCOL_ERROR),
        (h2.window_update(0, h2.MAX_WINDOW), h2.FLOW_CONTROL_ERROR),
        (h2.frame(h2.HEADERS, h2.PADDED | h2.END_HEADERS, 1, b"\x09abc"), h2.PROTOCOL_ERROR),
    ],
)
async def test_protocol_faults_end_the_connection_with_goaway(
    serve: Serve, fault: bytes, code: int
) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        client.send(fault)
        frames = await client.closed()
        goaways = [f for f in frames if f.kind == h2.GOAWAY]
        assert len(goaways) == 1 and h2.u32(goaways[0].payload, 4) == code
        await live_call_works(grpc)  # the server is fine


async def test_what_is_not_http2_is_closed_and_a_silent_client_too(serve: Serve) -> None:
    async with serve(header_timeout_s=0.3) as grpc:
        client = await H2Client.connect(port(grpc), preface=False)
        client.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        frames = await client.closed()  # the server's SETTINGS went out before it knew
        assert [f.kind for f in frames] == [h2.SETTINGS, h2.WINDOW_UPDATE]
        silent = await H2Client.connect(port(grpc), preface=False)
        started = asyncio.get_running_loop().time()
        await silent.closed()
        assert asyncio.get_running_loop().time() - started < 5
        await live_call_works(grpc)


@pytest.mark.parametrize(
    ("path", "data", "extra", "status", "detail"),
    [
        (b"/inference.GRPCInferenceService/Nope", message(b""), [], UNIMPLEMENTED, "not served"),
        (LIVE, message(b"", compressed=1), [], UNIMPLEMENTED, "uncompressed"),
        (LIVE, message(b"") + b"x", [], INVALID_ARGUMENT, "prefix says 0 bytes, 1 arrived"),
        (LIVE, b"", [], INVALID_ARGUMENT, "none arrived"),
        (INFER, message(b"\xff\xff\xff"), [], INVALID_ARGUMENT, "not a valid protocol buffer"),
        (LIVE, message(b""), [(b"grpc-encoding", b"gzip")], UNIMPLEMENTED, "grpc-encoding gzip"),
    ],
)
async def test_bad_calls_get_a_status_and_the_connection_goes_on(
    serve: Serve,
    path: bytes,
    data: bytes,
    extra: list[tuple[bytes, bytes]],
    status: int,
    detail: str,
) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        stream = client.new_stream()
        if data:
            client.send(
                client.headers(stream, path, extra) + h2.frame(h2.DATA, h2.END_STREAM, stream, data)
            )
        else:
            client.send(client.headers(stream, path, extra, end_stream=True))
        answer = await client.answer(stream)
        assert answer.status == status
        assert detail in answer.headers[b"grpc-message"].decode()
        assert (await client.answer(client.call(LIVE_REQUEST, LIVE))).status == OK
        client.close()


@pytest.mark.parametrize(
    ("change", "status"),
    [({"method": b"GET"}, b"405"), ({"content_type": b"text/plain"}, b"415")],
)
async def test_what_is_not_a_grpc_call_is_an_http_status(
    serve: Serve, change: dict[str, bytes], status: bytes
) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        client.send(client.headers(1, LIVE, end_stream=True, **change))  # type: ignore[arg-type]
        answer = await client.answer(1)
        assert answer.headers[b":status"] == status
        client.close()


async def test_a_message_over_the_limit_is_refused_as_it_arrives(serve: Serve) -> None:
    async with serve(max_body_bytes=1000) as grpc:
        client = await H2Client.connect(port(grpc))
        stream = client.new_stream()
        body = message(b"\0" * 2000)
        client.send(client.headers(stream, INFER) + h2.frame(h2.DATA, 0, stream, body[:1500]))
        answer = await client.answer(stream)
        assert answer.status == RESOURCE_EXHAUSTED
        assert b"limit of 1000 bytes" in answer.headers[b"grpc-message"]
        reset = await client.frame()
        assert (reset.kind, reset.stream, h2.u32(reset.payload)) == (
            h2.RST_STREAM,
            stream,
            h2.NO_ERROR,
        )
        client.send(h2.frame(h2.DATA, h2.END_STREAM, stream, body[1500:]))  # late: dropped
        assert (await client.answer(client.call(LIVE_REQUEST, LIVE))).status == OK
        client.close()


async def test_a_large_message_gets_window_as_it_arrives(serve: Serve, model_repo: Path) -> None:
    body = infer_request(model_repo, 3000)  # 288 KB: four times the first window
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        stream = client.new_stream()
        client.send(client.headers(stream, INFER))
        waits = await client.send_message(stream, body)
        answer = await client.answer(stream)
        client.close()
    assert waits > 0  # it had to wait for the server's WINDOW_UPDATE, and got it
    assert answer.status == OK
    assert list(pb.ModelInferResponse.FromString(answer.message).outputs[1].shape) == [3000]


async def test_data_past_the_window_is_a_flow_control_error(serve: Serve) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        client.send(client.headers(1, INFER) + h2.frame(h2.DATA, 0, 1, b"\0" * 70000))
        frames = await client.closed()
    goaway = [f for f in frames if f.kind == h2.GOAWAY]
    assert goaway and h2.u32(goaway[0].payload, 4) == h2.FLOW_CONTROL_ERROR


async def test_concurrent_large_calls_share_a_bounded_buffer_and_all_finish(
    serve: Serve, model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one message of calls still arriving, 12 calls of 864 KB at once on one
    channel (grpcio's client, 8 streams at a time) are given window oldest first, and every one
    is answered."""
    import grpc as grpcio

    from server.oip import grpc_connection
    from server.oip import grpc_predict_v2_pb2_grpc as pb_grpc

    monkeypatch.setattr(grpc_connection, "UNFINISHED_MESSAGES", 1)  # budget: 1 MB
    monkeypatch.setattr(grpc_connection, "MAX_STREAMS", 8)  # (8 first windows: 0.5 MB)
    rows = 9000  # 864 KB of FP32
    body = infer_request(model_repo, rows)
    async with serve(max_body_bytes=1_000_000, max_queue_rows=200_000) as grpc:
        options = [("grpc.max_send_message_length", -1)]
        async with grpcio.aio.insecure_channel(f"127.0.0.1:{port(grpc)}", options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            request = pb.ModelInferRequest.FromString(body)
            replies = await asyncio.gather(*(stub.ModelInfer(request) for _ in range(12)))
    assert all(list(r.outputs[1].shape) == [rows] for r in replies)


async def test_a_header_block_in_continuation_frames(serve: Serve) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        whole = client.headers(1, LIVE)[h2.HEADER_SIZE :]
        client.send(
            h2.frame(h2.HEADERS, 0, 1, whole[:3])
            + h2.frame(h2.CONTINUATION, 0, 1, whole[3:7])
            + h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, whole[7:])
            + h2.frame(h2.DATA, h2.END_STREAM, 1, message(LIVE_REQUEST))
        )
        assert (await client.answer(1)).status == OK
        client.close()


async def test_streams_past_the_limit_are_refused(serve: Serve) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        streams = [client.new_stream() for _ in range(MAX_STREAMS + 1)]
        client.send(b"".join(client.headers(s, LIVE) for s in streams))
        frame = await client.frame()
        while frame.kind != h2.RST_STREAM:
            frame = await client.frame()
        assert (frame.stream, h2.u32(frame.payload)) == (streams[-1], h2.REFUSED_STREAM)
        client.send(h2.frame(h2.DATA, h2.END_STREAM, streams[0], message(LIVE_REQUEST)))
        assert (await client.answer(streams[0])).status == OK
        client.close()


async def test_a_call_the_client_resets_is_not_answered(serve: Serve, model_repo: Path) -> None:
    async with serve(inline_max_cost_us=0) as grpc:  # inference in a thread: the call waits
        client = await H2Client.connect(port(grpc))
        stream = client.call(infer_request(model_repo, 200))
        client.send(h2.rst_stream(stream, h2.CANCEL))
        other = client.call(LIVE_REQUEST, LIVE)
        assert (await client.answer(other)).status == OK
        with pytest.raises(TimeoutError):  # nothing ever comes on the reset stream
            await client.answer(stream)
        client.close()
        await live_call_works(grpc)


async def test_shutdown_takes_no_new_calls_and_answers_the_running_ones(serve: Serve) -> None:
    async with serve() as grpc:
        client = await H2Client.connect(port(grpc))
        client.send(client.headers(1, LIVE))  # a call whose message has not arrived yet
        await client.ping()
        grpc.draining()
        frame = await client.frame()
        while frame.kind != h2.GOAWAY:
            frame = await client.frame()
        assert (h2.u32(frame.payload), h2.u32(frame.payload, 4)) == (1, h2.NO_ERROR)
        client.send(client.headers(3, LIVE, end_stream=True))
        client.send(h2.frame(h2.DATA, h2.END_STREAM, 1, message(LIVE_REQUEST)))
        frames = await client.closed()
        refused = [f for f in frames if f.kind == h2.RST_STREAM]
        assert [(f.stream, h2.u32(f.payload)) for f in refused] == [(3, h2.REFUSED_STREAM)]
        assert any(f.kind == h2.DATA and f.stream == 1 for f in frames)  # answered, then closed


async def test_random_frames_never_break_the_server(serve: Serve) -> None:
    """Fuzz: frames of every type with random flags, streams and payloads, some valid header
    blocks among them; each connection ends however it ends, and the server keeps serving."""
    rng = random.Random(13)
    async with serve(max_body_bytes=4096) as grpc:
        for _ in range(150):
            client = await H2Client.connect(port(grpc))
            chunks = []
            for _ in range(rng.randint(1, 12)):
                kind = rng.choice([0, 1, 1, 2, 3, 4, 6, 7, 8, 9, 0xA])
                stream = rng.choice([0, 1, 3, 5, 2, 2**31 - 1])
                if kind == h2.HEADERS and rng.random() < 0.6:
                    payload = client.headers(stream, rng.choice([LIVE, INFER]))[h2.HEADER_SIZE :]
                else:
                    payload = rng.randbytes(rng.choice([0, 1, 4, 5, 8, 9, 40]))
                chunks.append(h2.frame(kind, rng.randrange(256), stream, payload))
            data = b"".join(chunks)
            cut = rng.randint(0, len(data))  # in pieces, split anywhere
            client.send(data[:cut])
            await asyncio.sleep(0)
            client.send(data[cut:])
            try:
                await asyncio.wait_for(client.ping(), 0.5)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            client.close()
        await live_call_works(grpc)
