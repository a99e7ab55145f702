"""A response's head and body in one write: one system call and one TCP segment, not two.

uvicorn's httptools protocol writes a response's status line and headers to the socket as soon
as the app sends ``http.response.start``, then the body on ``http.response.body``: two ``write``
system calls per answer (``strace -c`` on a server under load counts two per request), two
segments on the wire, and a client that reads the head before its body. :class:`OneWriteCycle`
holds the head of a response whose ``Content-Length`` is known and non-zero (every JSON answer:
predict, infer, errors) until its body, and writes both in one call when the body comes whole in
one message, as every answer here does. ``strace -c -p <server pid>`` under load counts one write
per request instead of two.

Its ``send`` is uvicorn's (0.54, pinned), the same checks in the same order, for the common case
only (the server's own default headers, Date and Server, are checked once per list, not per
answer); everything else goes to uvicorn's own ``send`` unchanged, the held head written first:

- a head while the transport's buffer is full (flow control paused), with the access log on, on
  a ``HEAD`` request, or with default headers that frame the answer (``--header Connection:``);
  a response without a length (chunked), or of length zero;
- a body in several messages, a ``HEAD`` answer's body, or one the length does not match (uvicorn
  raises, after writing the head, as before);
- a client gone: nothing is written, as uvicorn writes nothing.

If the app fails between the head and the body (it never does here: both are sent from one
function with no await between), run_asgi closes the connection, and the client sees the
connection close where it would have seen a head and then the close.

:class:`server.connections.TabserveHttpProtocol` gives every request's cycle this class.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, with the head of a known-length response written
    together with its body (see the module docstring)."""

    _head: bytes | None = None
    _plain_defaults: ClassVar[object] = None
    """The last list of the server's default headers (Date, Server, ``--header``) found plain
    by :func:`_plain`, by identity: checked once per list (uvicorn makes a new one each second,
    for the date), not once per answer."""

    async def send(self, message: Any) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not self.disconnected
                and not self.flow.write_paused
            ):
                body = message.get("body", b"")
                if len(body) == self.expected_content_length:
                    self._complete(head + body)
                    return
            if not self.disconnected and not self.transport.is_closing():
                self.transport.write(head)
            await super().send(message)
            return
        defaults = self.default_headers
        if (
            message["type"] != "http.response.start"
            or self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or self.scope["method"] == "HEAD"
            or (defaults is not OneWriteCycle._plain_defaults and not _plain(defaults))
        ):
            await super().send(message)
            return
        head = self._start(message, defaults)
        if head is not None:
            self._head = head

    def _start(self, message: Any, defaults: list[tuple[bytes, bytes]]) -> bytes | None:
        """uvicorn's ``http.response.start``: the head, held (returned) when a body of a known,
        non-zero length follows, else written now (None). ``defaults``: the server's own
        headers, already checked (:func:`_plain`)."""
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        content = [STATUS_LINE[status_code]]
        for name, value in defaults:
            content.extend([name.lower(), b": ", value, b"\r\n"])
        has_connection_close = False
        for name, value in message.get("headers", ()):
            if HEADER_RE.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content.extend([name, b": ", value, b"\r\n"])
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and status_code not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        head = b"".join(content)
        if self.chunked_encoding is False and self.expected_content_length > 0:
            return head
        self.transport.write(head)
        return None

    def _complete(self, data: bytes) -> None:
        """uvicorn's last ``http.response.body`` of a known-length answer, written with its
        head."""
        self.transport.write(data)
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


def _plain(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the server's default headers can go out as they are: uvicorn's checks of names
    and values (it raises the same errors), and none of Content-Length, Transfer-Encoding or
    Connection, which would change the answer's framing (uvicorn's own send handles those)."""
    for name, value in headers:
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        if name.lower() in (b"content-length", b"transfer-encoding", b"connection"):
            return False
    OneWriteCycle._plain_defaults = headers
    return True
