"""Connection hygiene: read timeouts, a cap on open connections, early 413, and how keep-alive
connections end at shutdown.

uvicorn's httptools protocol has a keep-alive timeout, but no timeout for reading a request's
headers or body and no cap on open connections (its ``limit_concurrency`` answers only once the
headers are read, and logs every refusal). :class:`TabserveHttpProtocol` subclasses it
(``uvicorn.Config(http=TabserveHttpProtocol)``, see ``server.serve``) and adds, per connection:

- **header timeout**: a request's line and headers must arrive within ``header_timeout_s`` of its
  first byte (or of the connection opening): else ``408`` and close (a connection that sent nothing
  is just closed);
- **body timeout**: a body that stalls for ``body_timeout_s`` gets ``408``, and the connection
  closes;
- **keep-alive timeout**: an idle keep-alive connection closes after ``keep_alive_timeout_s``;
- **connection cap**: past ``max_connections`` open connections, a new one is answered ``503`` and
  closed at once (counted in ``tabserve_connections_refused_total``, logged at most every 10 s);
- **early 413**: a ``Content-Length`` over ``max_body_bytes`` is answered ``413`` before any of the
  body is read, and the connection closes; any answer sent while the request's body is still
  arriving (a chunked upload refused at the limit) carries ``Connection: close`` and the
  connection closes, instead of reading and discarding the rest;
- **one write per answer**: a response's head and body go out in one write
  (:mod:`server.one_write`);
- **shutdown**: uvicorn calls :meth:`TabserveHttpProtocol.shutdown` on every connection once it
  stops listening. The first call starts the app's drain (queued requests are answered within the
  drain timeout, what cannot run gets ``503``); from then on every new request, including one on
  an idle keep-alive connection, is answered ``503 shutting-down`` with ``Connection: close``, and
  idle connections close after at most one keep-alive timeout.

All answers written here are ``application/problem+json`` with the same shape as the app's. The
per-request cost is unchanged: timers are armed only when a read leaves a request incomplete, and
the ``Content-Length`` check is one comparison per header (``tabserve bench`` before and after).

The app publishes its :class:`ConnectionPolicy` as ``app.state.connections``; the protocol finds
it through the ASGI app uvicorn loaded.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httptools
import msgspec
from prometheus_client import Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from server.activity import ACTIVITY
from server.http_errors import PROBLEM_JSON, Problem
from server.metrics import FastCounter, ServerMetrics
from server.one_write import OneWriteCycle
from server.ratelimit import ThrottledLog
from server.request_meta import new_request_id
from server.settings import Settings

log = logging.getLogger("tabserve.connections")

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


def problem_response(
    status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> bytes:
    """A complete HTTP/1.1 response with a problem+json body and ``Connection: close``."""
    request_id = new_request_id()
    body = msgspec.json.encode(
        Problem(
            type=f"urn:tabserve:problem:{slug}",
            title=title,
            status=status,
            detail=detail,
            request_id=request_id,
        )
    )
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"content-type: {PROBLEM_JSON}",
        f"content-length: {len(body)}",
        f"x-request-id: {request_id}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ConnectionPolicy:
    """Limits and counters shared by the connections of one app (one per worker process)."""

    def __init__(
        self,
        *,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        keep_alive_timeout_s: float = 5.0,
        max_connections: int = 4096,
        max_body_bytes: int = 4 * 1024 * 1024,
        drain_timeout_s: float = 10.0,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self.drain_timeout_s = drain_timeout_s
        self.open = 0
        self.shutting_down = False
        self.on_shutdown: Callable[[], None] | None = None
        """Called once, when the server stops listening (the app's lifespan starts its drain)."""
        self._log_refused = ThrottledLog(log)
        self._log_closed = ThrottledLog(log)
        metrics = metrics if metrics is not None else ServerMetrics()
        self._refused = FastCounter(
            "tabserve_connections_refused",
            "Connections answered 503 and closed at once because max_connections were open.",
            [],
            registry=metrics.registry,
        ).labels()
        closed = FastCounter(
            "tabserve_connections_closed",
            "Connections closed by the server for a client fault: header_timeout, body_timeout, "
            "body_too_large (Content-Length over the limit).",
            ["reason"],
            registry=metrics.registry,
        )
        self._closed = {
            reason: closed.labels(reason)
            for reason in ("header_timeout", "body_timeout", "body_too_large")
        }
        gauge = Gauge(
            "tabserve_connections_open",
            "HTTP connections open in this worker.",
            registry=metrics.registry,
        )
        gauge.set_function(lambda: self.open)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ServerMetrics) -> ConnectionPolicy:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
            max_body_bytes=settings.max_body_bytes,
            drain_timeout_s=settings.drain_timeout_s,
            metrics=metrics,
        )

    def refused(self) -> None:
        self._refused.inc()
        self._log_refused(
            logging.WARNING,
            "event=connection_refused open=%d max_connections=%d",
            self.open,
            self.max_connections,
        )

    def closed(self, reason: str, client: tuple[str, int] | None) -> None:
        self._closed[reason].inc()
        self._log_closed(
            logging.INFO,
            "event=connection_closed reason=%s client=%s",
            reason,
            client[0] if client else "-",
        )

    def begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        if self.on_shutdown is not None:
            self.on_shutdown()


_policies: weakref.WeakKeyDictionary[Any, ConnectionPolicy] = weakref.WeakKeyDictionary()


def policy_of(app: Any) -> ConnectionPolicy:
    """The policy of the ASGI app uvicorn loaded (unwrapping uvicorn's middleware); a default one
    when the app has none."""
    try:
        return _policies[app]
    except (KeyError, TypeError):
        pass
    inner = app
    policy: ConnectionPolicy | None = None
    for _ in range(8):
        state = getattr(inner, "state", None)
        found = getattr(state, "connections", None) if state is not None else None
        if isinstance(found, ConnectionPolicy):
            policy = found
            break
        inner = getattr(inner, "app", None)
        if inner is None:
            break
    if policy is None:
        policy = ConnectionPolicy()
    try:
        _policies[app] = policy
    except TypeError:
        pass
    return policy


class _DeclaredTooLarge(Exception):
    """Raised from the parser callback when Content-Length is over the limit."""


def _refused_response() -> bytes:
    return problem_response(
        503,
        "too-many-connections",
        "Too many connections",
        "the server has too many open connections; retry later",
        {"retry-after": "1"},
    )


_SHUTTING_DOWN_DETAIL = "the server is shutting down; retry on another instance"


async def _shutting_down_app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app of every request that starts after shutdown began: 503, Connection: close."""
    request_id = new_request_id()
    body = msgspec.json.encode(
        Problem(
            type="urn:tabserve:problem:shutting-down",
            title="Shutting down",
            status=503,
            detail=_SHUTTING_DOWN_DETAIL,
            request_id=request_id,
        )
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", b"%d" % len(body)),
                (b"x-request-id", request_id.encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class TabserveHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        policy = policy_of(self.app)
        self.policy = policy
        self.timeout_keep_alive = policy.keep_alive_timeout_s  # type: ignore[assignment]
        self._limit = policy.max_body_bytes
        self._limit_digits = len(str(policy.max_body_bytes))
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading_body = False
        self._last_read = 0.0
        self._held_keep_alive: RequestResponseCycle | None = None
        """The cycle whose keep-alive waits for the rest of its body."""
        self._counted = False

    # --- connection life -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        policy = self.policy
        if policy.open >= policy.max_connections or policy.shutting_down:
            self.transport = transport
            policy.refused()
            transport.write(_refused_response())
            transport.close()
            return
        policy.open += 1
        self._counted = True
        super().connection_made(transport)
        self._arm(policy.header_timeout_s, body=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self.policy.open -= 1
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    # --- reading -------------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        # uvicorn's (0.54, pinned), but for the cycle's class: OneWriteCycle writes each answer's
        # head and body in one write. (Made here rather than given its class afterwards: a
        # changed __class__ costs every attribute access on the cycle ~2 µs a request.)
        http_version = self.parser.get_http_version()
        method = self.parser.get_method()
        self.scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = parsed_url.query or b""
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        existing_cycle = self.cycle
        self.cycle = OneWriteCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:  # pipelined requests queue up
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, plus the Content-Length check (a comparison of lengths for the
        # usual small bodies; int() only when the value has as many digits as the limit).
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif (
            name == b"content-length"
            and len(value) >= self._limit_digits
            and value.isdigit()
            and int(value) > self._limit
        ):
            raise _DeclaredTooLarge
        self.headers.append((name, value))

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus the 413 for a declared body over the limit and the read
        # timers (armed only when this read leaves a request incomplete), counted for the
        # loop's background work (server.activity).
        ACTIVITY.reads += 1
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _DeclaredTooLarge):
                self._refuse_body_too_large()
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:  # the headers are incomplete
            if self._read_timer is None or self._reading_body:
                self._arm(self.policy.header_timeout_s, body=False)
        elif cycle.more_body and not cycle.response_complete:  # the body is incomplete
            self._last_read = self.loop.time()
            if self._read_timer is None or not self._reading_body:
                self._arm(self.policy.body_timeout_s, body=True)
            if self._held_keep_alive is None and cycle.keep_alive:
                # An answer sent before the body is complete closes the connection.
                cycle.keep_alive = False
                self._held_keep_alive = cycle
        else:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            held = self._held_keep_alive
            if held is not None:
                self._held_keep_alive = None
                if not held.response_started and not self.policy.shutting_down:
                    held.keep_alive = True

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request its parser refuses is text/plain; ours is problem+json.
        self.transport.write(
            problem_response(
                400,
                "bad-request",
                "Bad request",
                "invalid HTTP request (request line, headers or body framing)",
            )
        )
        self.transport.close()

    def _arm(self, timeout: float, *, body: bool) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._reading_body = body
        self._read_timer = self.loop.call_later(timeout, self._read_timed_out)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle = self.cycle
        if self._reading_body:
            if cycle is None or not cycle.more_body or cycle.response_complete:
                return
            idle = self.loop.time() - self._last_read
            if idle < self.policy.body_timeout_s:
                self._read_timer = self.loop.call_later(
                    self.policy.body_timeout_s - idle, self._read_timed_out
                )
                return
            self.policy.closed("body_timeout", self.client)
            if not cycle.response_started:
                transport.write(self._timeout_response("body"))
            # the app's receive() now gets http.disconnect and its answer goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
            transport.close()
            return
        if cycle is not None and cycle.scope is self.scope:
            return  # the headers completed (this timer was not cancelled in time)
        self.policy.closed("header_timeout", self.client)
        if self.scope is not None:  # some of a request arrived (else: nothing to answer)
            transport.write(self._timeout_response("headers"))
        transport.close()

    def _timeout_response(self, what: str) -> bytes:
        timeout = self.policy.body_timeout_s if what == "body" else self.policy.header_timeout_s
        return problem_response(
            408,
            "request-timeout",
            "Request timeout",
            f"the request's {what} did not arrive within {timeout:g} s",
        )

    def _refuse_body_too_large(self) -> None:
        self.policy.closed("body_too_large", self.client)
        self.transport.write(
            problem_response(
                413,
                "payload-too-large",
                "Payload too large",
                f"request body over {self._limit} bytes (Content-Length)",
            )
        )
        self.transport.close()

    # --- shutdown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called by uvicorn on every connection once it stops listening (see the module doc)."""
        policy = self.policy
        policy.begin_shutdown()
        self.app = _shutting_down_app
        cycle = self.cycle
        self._held_keep_alive = None
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # answered, then closed
            return
        # Idle: stays open for its next request (answered 503, Connection: close) for at most one
        # keep-alive timeout, never past the drain timeout.
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            min(policy.keep_alive_timeout_s, policy.drain_timeout_s),
            self.timeout_keep_alive_handler,
        )
