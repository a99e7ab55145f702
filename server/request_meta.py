"""What a request's headers and path say before its body is read: the request id, the deadline,
the cache mode, whether the body is JSON (415 otherwise), and the version in the path.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from server.batcher import CacheMode
from server.errors import InvalidInput, UnsupportedMediaType, VersionNotFound

_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def new_request_id() -> str:
    """Unique within the process, cheap (no uuid4 per request); the prefix differs per process."""
    return f"{_id_prefix}-{next(_ids)}"


def valid_request_id(value: bytes) -> str | None:
    """An X-Request-ID header value as text when it is 1-128 visible ASCII characters (no space,
    no control character), else None: the one rule for echoing a client's id."""
    if 0 < len(value) <= 128 and value.isascii() and b" " not in value:
        text = value.decode("ascii")
        if text.isprintable():
            return text
    return None


def check_json_media_type(value: bytes) -> None:
    """A JSON route's Content-Type: ``application/json`` or ``application/<x>+json``, with any
    parameters (``charset=utf-8``); anything else is refused (415) before the body is read.

    A request without Content-Type is read as JSON (the caller does not call this): the body
    must still parse, a client that sends none (httpx ``content=``, a bare socket) meant JSON,
    and there is nothing else it could mean. ``curl -d`` sends
    ``application/x-www-form-urlencoded``: refused, with the fix in the message."""
    media = value.split(b";", 1)[0].strip().lower()
    if media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    ):
        return
    shown = media.decode("latin-1")[:100] or "(empty)"
    if media == b"application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"Content-Type {shown} (what curl -d sends) is not JSON; send Content-Type: "
            "application/json (curl: add -H 'Content-Type: application/json', or use --json)"
        )
    raise UnsupportedMediaType(f"Content-Type {shown} is not JSON; send application/json")


_VERSION = re.compile(r"\A(?:0|[1-9][0-9]{0,17})\Z")


def canonical_version(text: str) -> int | None:
    """A path's version as an int when written the one canonical way (ASCII digits, no sign,
    no leading zero, no ``_`` or spaces: ``1``, ``12``), else None. ``int()`` alone would take
    ``+1``, ``0_1``, `` 1`` and other scripts' digits as 1: aliases of one resource."""
    return int(text) if _VERSION.match(text) else None


def path_version(name: str, text: str) -> int:
    """The version in a path, or VersionNotFound (404) when it is not written canonically: the
    path names no version, as ``versions/abc`` names none."""
    version = canonical_version(text)
    if version is None:
        raise VersionNotFound(
            f"model {name} has no version {text!r}: a version is a plain decimal integer, such "
            "as 1 (no sign, leading zero, space or underscore)"
        )
    return version


class RequestMeta(msgspec.Struct):
    request_id: str
    deadline_ms: float | None
    cache_mode: CacheMode
    json_length: bytes | None = None
    """Inference-Header-Content-Length as sent: the body is that much JSON, then binary tensor
    data (the Open Inference Protocol's binary extension, ``server.oip.binary``)."""
    budget_ms: float | None = None
    """X-Latency-Budget-Ms: how long the client will wait for an answer; a model that degrades
    (``TABSERVE_DEGRADE_OBJECTIVE_MS``) answers within it from a cheaper variant if it must."""


def request_meta(headers: Iterable[tuple[bytes, bytes]]) -> RequestMeta:
    """X-Request-ID (accepted when 1-128 visible ASCII characters), X-Deadline-Ms, Cache-Control,
    Inference-Header-Content-Length; a Content-Type that is not JSON is refused (415), but for
    ``application/octet-stream`` on a body with binary tensor data."""
    request_id: str | None = None
    json_length: bytes | None = None
    media: bytes | None = None
    deadline_ms: float | None = None
    budget_ms: float | None = None
    cache_mode: Literal["default", "no-cache", "no-store"] = "default"
    for key, value in headers:
        if key == b"x-request-id":
            request_id = valid_request_id(value) or request_id
        elif key == b"x-deadline-ms":
            deadline_ms = milliseconds("X-Deadline-Ms", value)
        elif key == b"x-latency-budget-ms":
            budget_ms = milliseconds("X-Latency-Budget-Ms", value)
        elif key == b"content-type" and value != b"application/json":
            media = value
        elif key == b"inference-header-content-length":
            json_length = value
        elif key == b"cache-control":
            directives = value.lower()
            if b"no-store" in directives:
                cache_mode = "no-store"
            elif b"no-cache" in directives and cache_mode == "default":
                cache_mode = "no-cache"
    if media is not None and not (
        json_length is not None
        and media.split(b";", 1)[0].strip().lower() == b"application/octet-stream"
    ):
        check_json_media_type(media)
    return RequestMeta(
        request_id or new_request_id(), deadline_ms, cache_mode, json_length, budget_ms
    )


def milliseconds(header: str, value: bytes | str) -> float:
    """A header's number of milliseconds, from 0 up to 1e9 (else a 400 that names the header)."""
    try:
        ms = float(value)
    except ValueError:
        raise InvalidInput(f"{header} must be a number of milliseconds") from None
    if not (ms >= 0.0 and ms < 1e9):
        raise InvalidInput(f"{header} must be between 0 and 1e9")
    return ms
