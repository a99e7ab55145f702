"""One monitoring view across ``tabserve serve --workers N``: states published, labels forwarded.

Each worker has its own monitor per model version (its own drift window, feedback memory and
quality window: the batcher feeds it on the request path, and nothing there changes). The
workers meet in the directory their supervisor made for ``/metrics`` (``server.workershare``),
under ``monitoring/``:

- ``<pid>.json``: every ``interval_s`` (one second) each worker writes, for each version it
  serves, :meth:`ModelMonitor.state`: its window's bin totals (one integer per bin, missing and
  unseen slot of every column and of the answer columns), its quality window's sufficient
  statistics (confusion counts, sums of errors) and its counters; a few kB per version, written
  to a temporary file and renamed. ``GET .../monitoring`` on any worker takes its own live state
  and the others' files, sums the totals and the statistics, and computes PSI, KS, status and
  quality on the sums (:meth:`ModelMonitor.snapshot` with ``peers``). Files are re-read only
  when they changed. A worker whose file is older than ``5 * interval_s`` (gone, or stuck) is
  left out. The status of a shared monitor follows the merged view: the publishing loop
  re-evaluates it every second, and the worker with the lowest PID logs transitions.
- ``<pid>.sock``: a Unix socket on which each worker answers label feedback for rows it served.
  ``POST .../feedback`` looks in the answering worker first; when no version there knows the
  row, it asks the other workers, one JSON line each way (:meth:`MonitorShare.ask_peers`), and
  the worker that served the row records the label in its quality window, exactly as if the
  POST had reached it (a second label for the same row replaces the first). Only a feedback
  call the answering worker cannot match costs this round trip; predictions never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.monitoring.monitor import ModelMonitor, PeerState
from server.workershare import STALE_AFTER_INTERVALS, peer_files, write_atomic

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
"""Longest feedback message between workers (a feedback body is at most a few hundred bytes)."""


@dataclass(frozen=True)
class Peer:
    """Another worker's published monitoring states."""

    worker: str
    age_s: float
    """Seconds since it published them."""
    models: dict[str, dict[str, Any]]
    """``"name/version"`` -> :meth:`ModelMonitor.state`."""


def _key(monitor: ModelMonitor) -> str:
    return f"{monitor.card.name}/{monitor.card.version}"


class MonitorShare:
    """This worker's side of monitoring across workers (``directory``: the workers' share)."""

    def __init__(
        self,
        directory: Path,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        pid: int | None = None,
    ) -> None:
        self.directory = directory / "monitoring"
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        """How long to wait for another worker's feedback answer."""
        self.worker = str(pid if pid is not None else os.getpid())
        self.state_path = self.directory / f"{self.worker}.json"
        self.socket_path = self.directory / f"{self.worker}.sock"
        self._read: dict[Path, tuple[int, float, dict[str, dict[str, Any]]]] = {}
        """Parsed peer files by path: (mtime_ns, published at, models)."""
        self._server: asyncio.AbstractServer | None = None
        self._peers: tuple[float, list[Peer]] | None = None
        """The last :meth:`peers` and when it was read (monotonic)."""

    # --- states ------------------------------------------------------------------------------

    def publish(self, monitors: Iterable[ModelMonitor]) -> None:
        """Write the states of our monitors for the other workers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        models = {_key(m): m.state() for m in monitors}
        write_atomic(self.state_path, json.dumps({"published": time.time(), "models": models}))

    def peers(self) -> list[Peer]:
        """The other workers whose states are fresh (published within ``5 * interval_s``).

        Read again at most every ``interval_s / 20`` (a scrape's snapshots of every version
        share one read)."""
        now_monotonic = time.monotonic()
        if self._peers is not None and now_monotonic - self._peers[0] < self.interval_s / 20:
            return self._peers[1]
        found = self._read_peers()
        self._peers = (now_monotonic, found)
        return found

    def _read_peers(self) -> list[Peer]:
        found: list[Peer] = []
        now = time.time()
        seen: set[Path] = set()
        for path, _ in peer_files(self.directory, self.state_path):
            seen.add(path)
            try:
                mtime = path.stat().st_mtime_ns
                cached = self._read.get(path)
                if cached is None or cached[0] != mtime:
                    document = json.loads(path.read_text())
                    cached = (mtime, float(document["published"]), dict(document["models"]))
                    self._read[path] = cached
            except (OSError, ValueError, KeyError, TypeError):
                continue  # replaced or removed while read: the next read has it
            age_s = max(0.0, now - cached[1])
            if age_s <= STALE_AFTER_INTERVALS * self.interval_s:
                found.append(Peer(path.stem, age_s, cached[2]))
        for gone in self._read.keys() - seen:
            del self._read[gone]
        return found

    def peer_states(self, monitor: ModelMonitor, peers: Iterable[Peer]) -> list[PeerState]:
        """The other workers' states of ``monitor``'s version."""
        key = _key(monitor)
        return [PeerState(p.worker, p.models[key], p.age_s) for p in peers if key in p.models]

    def snapshot(self, monitor: ModelMonitor) -> dict[str, Any]:
        """``monitor``'s snapshot over every worker's traffic and labels."""
        return monitor.snapshot(self.peer_states(monitor, self.peers()), worker=self.worker)

    def refresh(self, monitors: Iterable[ModelMonitor]) -> None:
        """Publish our states, then re-evaluate each version's status on the merged view (the
        worker with the lowest PID among the fresh ones logs transitions)."""
        monitors = list(monitors)
        self.publish(monitors)
        peers = self.peers()
        leader = all(_pid(self.worker) <= _pid(p.worker) for p in peers)
        for monitor in monitors:
            monitor.refresh_status(self.peer_states(monitor, peers), announce=leader)

    # --- feedback between workers ------------------------------------------------------------

    async def serve(self, answer: Callable[[bytes], bytes]) -> None:
        """Answer the other workers' feedback messages with ``answer`` on our socket."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                line = await asyncio.wait_for(reader.readline(), self.timeout_s)
                writer.write(answer(line) + b"\n")
                await writer.drain()
            except (OSError, ValueError, TimeoutError) as exc:
                log.warning("event=feedback_peer_failed error=%r", exc)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            handle, path=str(self.socket_path), limit=MAX_MESSAGE_BYTES
        )

    async def ask_peers(self, message: bytes, found: Callable[[bytes], bool]) -> list[bytes]:
        """Send ``message`` to the other workers, one at a time, until one answers ``found``;
        every answer received (workers that cannot be reached in time are skipped)."""
        answers: list[bytes] = []
        for path, _ in peer_files(self.directory, self.socket_path, "*.sock"):
            reply = await self.ask(path, message)
            if reply is not None:
                answers.append(reply)
                if found(reply):
                    break
        return answers

    async def ask(self, path: Path, message: bytes) -> bytes | None:
        """One worker's answer to ``message``; None when it cannot be reached in time."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(
                    str(path), limit=MAX_MESSAGE_BYTES
                )
                writer.write(message + b"\n")
                await writer.drain()
                return (await reader.readline()).rstrip(b"\n") or None
        except ConnectionRefusedError:  # nobody listens: that worker died without cleaning up
            _remove(path)
            log.info("event=feedback_peer_gone socket=%s (removed)", path.name)
            return None
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("event=feedback_peer_unreachable socket=%s error=%r", path.name, exc)
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def close(self) -> None:
        """Stop answering, and remove our files (our window and labels go with this worker)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for path in (self.socket_path, self.state_path):
            _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _pid(worker: str) -> int:
    try:
        return int(worker)
    except ValueError:
        return 1 << 62
