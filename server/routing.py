"""Which version of a model answers (its primary) and which scores a copy of its traffic (its
shadow), kept in the model repository beside the versions:

- ``<models_dir>/<name>/routing.json``: ``{"primary": 3, "shadow": 4, "previous": [1, 2]}``.
  No file (or no ``primary``): the newest version answers, as always; no shadow. ``previous``
  are the primaries before this one, oldest first: a rollback goes back to the last of them.
- ``<models_dir>/<name>/routing-events.jsonl``: one JSON line per change (what, the routing
  after it, who asked: ``admin``, ``auto`` or ``retrain``, and why), newest last.

Every server process reads the file on each repository scan (``Registry.reload``), so an admin
call in one worker reaches the others at their next scan (``TABSERVE_RELOAD_INTERVAL_S``), and a
restart keeps the routing. Changes are read-modify-write under an exclusive ``flock`` on
``<name>/.routing.lock`` and land by one ``os.replace``: two writers (an admin call and
``tabserve retrain``) never lose each other's change, and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

ROUTING_FILE = "routing.json"
EVENTS_FILE = "routing-events.jsonl"
LOCK_FILE = ".routing.lock"
TAIL_BYTES = 64 * 1024
"""Bytes read from the end of the events file (it only grows)."""

Action = Literal["pin", "shadow", "unshadow", "promote", "rollback"]
Actor = Literal["admin", "auto", "retrain"]


class RoutingError(ValueError):
    """A routing change that cannot apply (nothing to roll back to, no shadow to promote)."""


class Routing(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    primary: int | None = None
    """The version that answers; None: the newest."""
    shadow: int | None = None
    """The version that scores a copy of the primary's traffic (never answering); None: none."""
    previous: list[int] = []
    """Earlier primaries, oldest first (a rollback returns to the last)."""

    def pinned(self, version: int) -> Routing:
        """The same routing with ``version`` as the primary (nothing remembered)."""
        return msgspec.structs.replace(self, primary=version)

    def with_shadow(self, version: int | None) -> Routing:
        return msgspec.structs.replace(self, shadow=version)

    def promoted(self, version: int, serving: int, *, from_shadow: bool = False) -> Routing:
        """``version`` answers from now on; ``serving`` (the primary it replaces, as the caller
        saw it) is remembered. A shadow that is promoted stops shadowing. Compare-and-swap: when
        the file names another primary than ``serving`` (or, ``from_shadow``, another shadow
        than ``version``), another writer changed it meanwhile and nothing applies."""
        if version == serving:
            raise RoutingError(f"version {version} already answers")
        if self.primary is not None and self.primary != serving:
            raise RoutingError(f"version {self.primary} answers now, not {serving}")
        if from_shadow and self.shadow != version:
            raise RoutingError(f"version {version} is no longer the shadow")
        shadow = None if self.shadow == version else self.shadow
        return Routing(primary=version, shadow=shadow, previous=[*self.previous, serving][-20:])

    def rolled_back(self) -> Routing:
        """Back to the primary before this one (its shadow, if any, keeps shadowing)."""
        if not self.previous:
            raise RoutingError("there is no earlier primary to roll back to")
        back = self.previous[-1]
        shadow = None if self.shadow == back else self.shadow
        return Routing(primary=back, shadow=shadow, previous=self.previous[:-1])


class RoutingEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    time: str
    action: Action
    by: Actor
    primary: int | None
    shadow: int | None
    reason: str = ""


_decode = msgspec.json.Decoder(Routing).decode
_decode_event = msgspec.json.Decoder(RoutingEvent).decode
_encode = msgspec.json.Encoder().encode


def read_routing(models_dir: Path, name: str) -> Routing:
    """The routing of ``name``; no file: the default (newest answers, no shadow).

    Raises RoutingError when the file exists but is not a routing (a server keeps the routing
    it had and logs it; see ``Registry.reload``)."""
    try:
        raw = (models_dir / name / ROUTING_FILE).read_bytes()
    except FileNotFoundError:
        return Routing()
    try:
        return _decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RoutingError(f"{models_dir / name / ROUTING_FILE}: {exc}") from exc


def read_events(models_dir: Path, name: str, last: int = 20) -> list[RoutingEvent]:
    """The newest ``last`` routing events of ``name``, oldest first (unreadable lines skipped)."""
    try:
        with (models_dir / name / EVENTS_FILE).open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL_BYTES))
            lines = fh.read().splitlines()
    except OSError:  # none yet, or unreadable: no events to show (never a failed request)
        return []
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first line read may be the end of a longer one
    events: list[RoutingEvent] = []
    for line in lines[-last:]:
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
            events.append(_decode_event(line))
    return events


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_routing(
    models_dir: Path,
    name: str,
    change: Callable[[Routing], Routing],
    *,
    action: Action,
    by: Actor,
    reason: str = "",
) -> Routing:
    """Apply ``change`` to the current routing of ``name`` and write it with its event.

    Raises RoutingError from ``change`` (nothing written) and OSError when the repository is not
    writable."""
    model_dir = models_dir / name
    if not model_dir.is_dir():
        raise RoutingError(f"no model folder {model_dir}")
    with _locked(model_dir):
        new = change(read_routing(models_dir, name))
        fd, tmp = tempfile.mkstemp(prefix=".routing-", dir=model_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_encode(new) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, model_dir / ROUTING_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        event = RoutingEvent(
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            action=action,
            by=by,
            primary=new.primary,
            shadow=new.shadow,
            reason=reason,
        )
        with (model_dir / EVENTS_FILE).open("ab") as fh:
            fh.write(_encode(event) + b"\n")
    return new
