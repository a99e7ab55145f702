"""What every route needs: settings, metrics, registry, and the one predict path (v1 and v2).

One :class:`Core` per app lives in ``app.state.core``; extension routes get it from there.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

import numpy as np
from litestar.types import Receive, Scope, Send

from server.errors import InvalidInput, PayloadTooLarge
from server.http_errors import status_of
from server.ladder import FULL
from server.large_bodies import LARGE_BODY
from server.metrics import CounterChild, HistogramChild, ServerMetrics
from server.modelcard import ModelCard
from server.registry import Registry
from server.request_meta import request_meta
from server.settings import Settings

T = TypeVar("T")

Decode = Callable[[bytes, ModelCard, int], tuple[np.ndarray, T]]
DecodeLarge = Callable[[bytes, ModelCard, int], Awaitable[tuple[np.ndarray, T]]]
DecodeBinary = Callable[[bytes, bytes, ModelCard, int], tuple[np.ndarray, T]]


class Answer(NamedTuple):
    """An encoded 200 answer that is not plain JSON: its body and its headers (Content-Type
    among them; Content-Length and X-Request-ID are added)."""

    body: bytes
    headers: list[tuple[bytes, bytes]]


Encode = Callable[[ModelCard, str, T, np.ndarray], "bytes | Answer"]


@dataclass(frozen=True)
class Route(Generic[T]):
    """One predict route's wire format: a small id (the response memo keys bodies by route as
    well, since /v1 and /v2 bodies decode differently), its decoder and its encoder."""

    id: int
    decode: Decode[T]
    encode: Encode[T]
    keep: Callable[[ModelCard, T, np.ndarray], T] = lambda card, extra, scores: extra
    """What the response memo keeps in place of the decoded extra, given the model and the
    scores: only what ``encode`` needs to answer again (it may encode ahead)."""
    decode_large: DecodeLarge[T] | None = None
    """For bodies over ``payload.LARGE_BODY``: the same answer as ``decode``, a slice of rows at
    a time with the event loop free between slices."""
    decode_binary: DecodeBinary[T] | None = None
    """For bodies with binary tensor data (``Inference-Header-Content-Length``, given as its
    second argument); None: the route refuses them (400)."""


JSON = "application/json"


def with_header(content: bytes | Answer, key: bytes, value: bytes) -> Answer:
    """An encoded answer with one more response header."""
    if isinstance(content, Answer):
        return Answer(content.body, [*content.headers, (key, value)])
    return Answer(content, [_JSON, (key, value)])


class JSONBytes:
    """A 200 ``application/json`` response as a bare ASGI app: already-encoded bytes and the
    request id, with none of Litestar's response building (headers object, cookies, encoders)."""

    __slots__ = ("body", "headers", "request_id")

    def __init__(
        self,
        body: bytes,
        request_id: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.body = body
        self.request_id = request_id
        self.headers = headers
        """Instead of ``Content-Type: application/json`` (an :class:`Answer`'s headers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = (b"content-length", b"%d" % len(self.body))
        headers = [_JSON, length] if self.headers is None else [*self.headers, length]
        if self.request_id is not None:
            headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


_JSON = (b"content-type", b"application/json")


def json_response(content: bytes | Answer, request_id: str | None = None) -> JSONBytes:
    if isinstance(content, Answer):
        return JSONBytes(content.body, request_id, content.headers)
    return JSONBytes(content, request_id)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body straight from ASGI ``receive``, refused past ``limit`` bytes.

    Cheaper than ``Request.body()`` (measured ~2x on one-row bodies); the limit is enforced on
    the bytes received, whatever Content-Length claims.
    """
    message = await receive()
    body: bytes = message.get("body", b"")  # type: ignore[assignment]
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        return body
    chunks = [body]
    total = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Core:
    """The serving core of one app."""

    def __init__(self, settings: Settings, metrics: ServerMetrics, registry: Registry) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self._latency: dict[tuple[str, int], HistogramChild] = {}
        self._requests: dict[tuple[str, int], CounterChild] = {}

    def record(self, model: str, status: int, started: float) -> None:
        """One latency observation per request, children cached (no label lookup per call)."""
        key = (model, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.metrics.request_latency.labels(model, str(status))
        child.observe(time.perf_counter() - started)

    def count(self, model: str, version: int) -> None:
        key = (model, version)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.metrics.requests.labels(model, str(version))
        child.inc()

    async def predict(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        version: int | None,
        route: Route[T],
    ) -> JSONBytes:
        """Read, resolve, decode, batch, encode: the request path shared by /v1 and /v2.

        A body the model's response memo remembers (``server.cache.memo``) skips decoding and
        the batcher; its rows are still admitted and observed (:meth:`Batcher.answered`)."""
        started = time.perf_counter()
        label = "unknown"  # never a client-chosen string as a metrics label
        try:
            meta = request_meta(scope["headers"])
            state = scope.get("state")
            if isinstance(state, dict):
                state["request_id"] = meta.request_id
            body = await read_body(receive, self.settings.max_body_bytes)
            # From here to the enqueue there is no await (but for a large body's decoding, which
            # looks the version up again after): a reload cannot swap the version away.
            model = self.registry.get(name, version)
            label = model.card.name
            self.count(label, model.card.version)
            deadline_ms = (
                self.settings.default_deadline_ms if meta.deadline_ms is None else meta.deadline_ms
            )
            now = time.monotonic()
            deadline = now - (time.perf_counter() - started) + deadline_ms / 1000.0
            ladder = model.ladder
            if ladder is not None:  # degrade on: the budget is the deadline too
                budget_ms = ladder.objective_ms if meta.budget_ms is None else meta.budget_ms
                budget_at = now - (time.perf_counter() - started) + budget_ms / 1000.0
                deadline = min(deadline, budget_at)
            batcher = model.batcher
            memo, mode = batcher.memo, meta.cache_mode
            json_length, decode_binary = meta.json_length, route.decode_binary
            if json_length is not None:
                if decode_binary is None:
                    raise InvalidInput(
                        "binary tensor data (Inference-Header-Content-Length) is taken by "
                        "/v2 infer only; send this route a JSON body"
                    )
                memo = None  # the memo keys JSON bodies (a binary one's meaning needs the header)
            answer = token = None
            if memo is not None and mode != "no-store":
                try:
                    token = memo.memo_token()  # read now: an answer from before a flush is dropped
                    if mode == "default":
                        answer = memo.recall(route.id, body)
                except Exception:
                    batcher.hook_failed("memo_failed")
                    answer = token = None
            card, header = model.card, model.variant_header
            if answer is None:
                # Refuse before decoding when the queue has no room (degrade: not even the
                # cheapest variant's).
                (batcher if ladder is None else ladder.rungs[-1].batcher).admit(deadline)
                max_rows = self.settings.max_request_rows
                admitted = True  # no await since admit(): predict need not check it again
                if json_length is not None and decode_binary is not None:
                    rows, extra = decode_binary(body, json_length, model.card, max_rows)
                elif len(body) > LARGE_BODY and route.decode_large is not None:
                    admitted = False
                    rows, extra = await route.decode_large(body, model.card, max_rows)
                    current = self.registry.get(name, version)
                    if current is not model:  # a reload landed while the slices were decoded
                        model, batcher, token = current, current.batcher, None
                        ladder, card, header = model.ladder, model.card, model.variant_header
                        rows, extra = route.decode(body, model.card, max_rows)
                else:
                    rows, extra = route.decode(body, model.card, max_rows)
                if ladder is None:
                    scores = await batcher.predict(
                        rows,
                        deadline=deadline,
                        request_id=meta.request_id,
                        cache_mode=mode,
                        admitted=admitted,
                    )
                else:
                    rung = ladder.pick(len(rows), deadline, time.monotonic())
                    rung, scores = await ladder.predict(rung, rows, deadline, meta.request_id, mode)
                    if rung.name != FULL:  # a variant's answer is not the model's: not memoized
                        token = None
                    card, header = rung.card, rung.header
                if memo is not None and token is not None:
                    try:
                        kept = model.card
                        memo.remember(
                            route.id,
                            body,
                            lambda: (rows, route.keep(kept, extra, scores), scores),
                            token,
                        )
                    except Exception:
                        batcher.hook_failed("memo_failed")
            else:
                rows, extra, scores = answer
                batcher.answered(rows, scores, deadline=deadline, request_id=meta.request_id)
            content = route.encode(card, meta.request_id, extra, scores)
            if header is not None:
                content = with_header(content, b"x-model-variant", header)
        except Exception as exc:
            self.record(label, status_of(exc), started)
            raise
        self.record(label, 200, started)
        return json_response(content, meta.request_id)
