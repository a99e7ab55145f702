"""OneWriteCycle: the same bytes as uvicorn's cycle, a known-length answer in one write."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from server.one_write import OneWriteCycle
from tests.support.server_process import ServerProcess

LENGTH = (b"content-length", b"11")
JSON = (b"content-type", b"application/json")


class Transport:
    """Records each write (as uvloop's transport would send it: one system call each)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(
    cls: type[RequestResponseCycle],
    transport: Transport,
    *,
    method: str = "POST",
    keep_alive: bool = True,
) -> tuple[RequestResponseCycle, list[str]]:
    done: list[str] = []
    made = cls(
        scope={"method": method, "type": "http"},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"server", b"tabserve-test")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append("response"),
    )
    return made, done


async def both(messages: list[Any], **kwargs: Any) -> tuple[Transport, Transport]:
    """The same messages through uvicorn's cycle and ours: their transports."""
    out = []
    for cls in (RequestResponseCycle, OneWriteCycle):
        transport = Transport()
        made, done = cycle(cls, transport, **kwargs)
        for message in messages:
            await made.send(message)
        assert made.response_complete
        assert done == ["response"]
        out.append(transport)
    return out[0], out[1]


def start(*headers: tuple[bytes, bytes], status: int = 200) -> Any:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, more: bool = False) -> Any:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def test_a_known_length_answer_is_one_write_of_the_same_bytes() -> None:
    theirs, ours = await both([start(JSON, LENGTH), body(b'{"ok":true}')])
    assert len(theirs.writes) == 2  # uvicorn: the head, then the body
    assert ours.writes == [b"".join(theirs.writes)]
    assert ours.writes[0].startswith(b"HTTP/1.1 200 OK\r\nserver: tabserve-test\r\n")


async def test_connection_close_is_written_and_the_transport_closed_after() -> None:
    theirs, ours = await both([start(JSON, LENGTH), body(b'{"ok":true}')], keep_alive=False)
    assert ours.writes == [b"".join(theirs.writes)]
    assert b"connection: close\r\n" in ours.writes[0]
    assert ours.closed and theirs.closed


@pytest.mark.parametrize(
    "messages",
    [
        [start(JSON), body(b"ab", more=True), body(b"cd")],  # no length: chunked
        [start(JSON, (b"content-length", b"0")), body(b"")],  # nothing to join
        [start(JSON, (b"content-length", b"4")), body(b"ab", more=True), body(b"cd")],
        [start(status=204), body(b"")],
    ],
    ids=["chunked", "empty", "in-parts", "no-content"],
)
async def test_other_answers_are_written_as_uvicorn_writes_them(
    messages: list[Any],
) -> None:
    theirs, ours = await both(messages)
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    assert len(ours.writes) <= len(theirs.writes)


async def test_a_head_request_gets_the_head_alone() -> None:
    theirs, ours = await both([start(JSON, LENGTH), body(b"")], method="HEAD")
    assert ours.writes == theirs.writes
    assert ours.writes[0].endswith(b"content-length: 11\r\n\r\n")


async def test_a_body_longer_than_its_length_fails_as_in_uvicorn() -> None:
    for cls in (RequestResponseCycle, OneWriteCycle):
        transport = Transport()
        made, _ = cycle(cls, transport)
        await made.send(start(JSON, LENGTH))
        with pytest.raises(RuntimeError, match="longer than Content-Length"):
            await made.send(body(b'{"ok":true} and more'))
        assert len(transport.writes) == 1  # the head, as uvicorn wrote it
        assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")


async def test_a_client_gone_before_the_body_gets_nothing() -> None:
    transport = Transport()
    made, done = cycle(OneWriteCycle, transport)
    await made.send(start(JSON, LENGTH))
    made.disconnected = True
    await made.send(body(b'{"ok":true}'))
    assert transport.writes == []
    assert done == []


async def test_a_full_write_buffer_keeps_uvicorns_order() -> None:
    transport = Transport()
    made, done = cycle(OneWriteCycle, transport)
    await made.send(start(JSON, LENGTH))
    made.flow.pause_writing()
    sending = asyncio.ensure_future(made.send(body(b'{"ok":true}')))
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the head; the body waits for room
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    made.flow.resume_writing()
    await sending
    assert transport.writes[1] == b'{"ok":true}'
    assert done == ["response"]


def test_a_real_server_frames_answers_and_errors_on_one_connection(model_repo: Path) -> None:
    """Against a real ``tabserve serve``: keep-alive requests in turn on one connection, each
    answer (200 and 4xx) whole, head and body, in the read after its request. (That the head and
    body are one write is the unit tests' to show: on loopback two writes often arrive together
    too.)"""
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        row = data["X"][0].astype(np.float32).tolist()
    with ServerProcess(model_repo) as server:
        requests = [
            (b"/v1/models/xgb_small/predict", b'{"instances":[%s]}' % str(row).encode()),
            (b"/v1/models/xgb_small/predict", b'{"instances":[[1]]}'),
            (b"/v1/models/nope/predict", b"{}"),
        ]
        statuses = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            for path, payload in requests:
                sock.sendall(
                    b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (path, len(payload), payload)
                )
                data = sock.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                assert len(rest) == length, data  # the body came with its head
                statuses.append(int(head.split(b" ")[1]))
        assert statuses == [200, 400, 404]


async def test_server_default_headers_that_frame_the_answer_go_uvicorns_way() -> None:
    messages = [start(JSON, LENGTH), body(b'{"ok":true}')]
    out = []
    for cls in (RequestResponseCycle, OneWriteCycle):
        transport = Transport()
        made, _ = cycle(cls, transport)
        made.default_headers = [(b"server", b"x"), (b"Connection", b"close")]
        for message in messages:
            await made.send(message)
        out.append(transport)
    assert b"".join(out[1].writes) == b"".join(out[0].writes)
    assert out[1].closed and out[0].closed  # uvicorn read the default Connection: close


async def test_a_bad_default_header_fails_as_in_uvicorn() -> None:
    for cls in (RequestResponseCycle, OneWriteCycle):
        made, _ = cycle(cls, Transport())
        made.default_headers = [(b"x-bad", b"line\r\nbreak")]
        with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
            await made.send(start(JSON, LENGTH))
