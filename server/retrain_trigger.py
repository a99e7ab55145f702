"""Retraining triggers: a served model entering drift, or a schedule, runs a command or calls a
webhook, at most once per cool-down.

Every second the extension evaluates each served primary's monitor status when it is due (the
window's PSI, as a batch would). A model whose status turns to ``drift``
(``TABSERVE_RETRAIN_ON_DRIFT``), or whose last trigger (never triggered: the server's start) is
``TABSERVE_RETRAIN_EVERY_S`` old, triggers, unless it triggered less than
``TABSERVE_RETRAIN_COOLDOWN_S`` ago: a signal flapping between watch and drift retrains once.

- ``TABSERVE_RETRAIN_COMMAND``: split like a shell line (no shell runs it), each word formatted
  with ``{model}``, ``{version}`` (the primary), ``{reason}`` (``drift`` or ``schedule``) and
  ``{since}`` (ISO time the drift began; for a schedule, the previous trigger or the server's
  start). Its output lines go to the server's log (``event=retrain_output``); one run per model
  at a time; on shutdown a run still going is stopped (SIGTERM, then SIGKILL after 5 s).
- ``TABSERVE_RETRAIN_WEBHOOK``: a JSON POST ``{"model", "version", "reason", "since", "status",
  "time"}`` (5 s timeout), for a pipeline that retrains elsewhere.

The cool-down is kept in ``<models_dir>/<name>/.retrain-trigger.json`` under an exclusive lock:
the workers of ``--workers N`` (each sees the same merged drift status) trigger once between
them, and a restart does not forget it. When that file cannot be written the worker keeps the
time in memory (and says so in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shlex
import signal
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from server.core import Core
from server.extension import Extension
from server.monitoring.extension import MonitoringExtension
from server.settings import Settings

log = logging.getLogger("tabserve.retrain")

STATE_FILE = ".retrain-trigger.json"
KILL_AFTER_S = 5.0


@dataclass
class Trigger:
    """The last trigger of one model, as the model's shadow view shows it."""

    time: str
    reason: str
    since: str
    outcome: str = "started"
    """started, then (command) exit code N, or (webhook) HTTP N; or an error."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RetrainTrigger(Extension):
    """Watches the served primaries' drift status and fires the configured hooks."""

    def __init__(
        self, settings: Settings, monitoring: MonitoringExtension, interval_s: float = 1.0
    ) -> None:
        self.settings = settings
        self.monitoring = monitoring
        self.interval_s = interval_s
        self.last: dict[str, Trigger] = {}
        self._seen: dict[str, str] = {}  # model -> status at the last look
        self._memory_times: dict[str, float] = {}  # when the state file cannot be written
        self._runs: dict[str, asyncio.subprocess.Process | None] = {}  # None: starting
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._core: Core | None = None
        self._started = _now_iso()
        self._started_at = time.time()
        self._counter: Counter | None = None

    @property
    def enabled(self) -> bool:
        s = self.settings
        hooks = s.retrain_command is not None or s.retrain_webhook is not None
        return hooks and (s.retrain_on_drift or s.retrain_every_s > 0)

    async def start(self, core: Core) -> None:
        self._core = core
        if not self.enabled:
            return
        self._counter = Counter(
            "tabserve_retrain_triggers",
            "Retraining triggers fired, by model, reason (drift, schedule) and hook",
            ["model", "reason", "hook"],
            registry=core.metrics.registry,
        )
        self._watch = asyncio.get_running_loop().create_task(self._loop(), name="retrain-watch")

    def draining(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    async def stop(self) -> None:
        self._stopping = True  # a command starting now is stopped as soon as it started
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for name, process in list(self._runs.items()):
            if process is not None:
                await _terminate(process, name)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._core is not None and self._counter is not None:
            self._core.metrics.registry.unregister(self._counter)
        self._counter = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception as exc:  # never stop watching over one bad round
                log.error("event=retrain_watch_failed error=%r", exc)

    def check(self) -> None:
        """One look at every served primary (the loop calls it every interval)."""
        core = self._core
        if core is None:
            return
        s = self.settings
        for monitor in self.monitoring.serving():
            name = monitor.card.name
            try:
                primary = core.registry.get(name)
            except Exception:
                continue
            if primary.card is not monitor.card:
                continue
            status = monitor.check_status()
            entered = status == "drift" and self._seen.get(name, "drift") != "drift"
            if name not in self._seen and status == "drift":
                entered = True  # already drifting at the first look
            self._seen[name] = status
            if entered and s.retrain_on_drift:
                self.fire(name, primary.version, "drift", monitor.status_since, status)
            elif s.retrain_every_s > 0:
                # never triggered: the schedule counts from the server's start
                last = self._last_time(name) or self._started_at
                if time.time() - last >= s.retrain_every_s:
                    since = self.last[name].time if name in self.last else self._started
                    self.fire(name, primary.version, "schedule", since, status)

    def fire(self, name: str, version: int, reason: str, since: str, status: str) -> bool:
        """Run the hooks for ``name`` unless it triggered within the cool-down; True if fired."""
        if not self._claim(name):
            log.debug("event=retrain_cooldown model=%s reason=%s", name, reason)
            return False
        trigger = Trigger(time=_now_iso(), reason=reason, since=since)
        self.last[name] = trigger
        log.warning(
            "event=retrain_triggered model=%s version=%d reason=%s since=%s",
            name,
            version,
            reason,
            since,
        )
        s = self.settings
        fields = {"model": name, "version": str(version), "reason": reason, "since": since}
        loop = asyncio.get_running_loop()
        if s.retrain_command is not None:
            self._count(name, reason, "command")
            self._spawn(
                loop.create_task(self._run_command(name, s.retrain_command, fields, trigger))
            )
        if s.retrain_webhook is not None:
            self._count(name, reason, "webhook")
            body = {**fields, "version": version, "status": status, "time": trigger.time}
            self._spawn(loop.create_task(self._call_webhook(s.retrain_webhook, body, trigger)))
        return True

    def describe(self, name: str) -> dict[str, Any] | None:
        trigger = self.last.get(name)
        return asdict(trigger) if trigger is not None else None

    def _spawn(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, name: str, reason: str, hook: str) -> None:
        if self._counter is not None:
            self._counter.labels(name, reason, hook).inc()

    # --- the cool-down ---------------------------------------------------------------------

    def _state_path(self, name: str) -> Path:
        return self.settings.models_dir / name / STATE_FILE

    def _last_time(self, name: str) -> float | None:
        try:
            return float(json.loads(self._state_path(name).read_text())["time"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._memory_times.get(name)

    def _claim(self, name: str) -> bool:
        """Take the trigger for ``name`` if its cool-down has passed (across workers)."""
        now = time.time()
        cooldown = self.settings.retrain_cooldown_s
        path = self._state_path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning(
                "event=retrain_state_unwritable path=%s error=%r (kept in memory)", path, exc
            )
            last = self._memory_times.get(name)
            if last is not None and now - last < cooldown:
                return False
            self._memory_times[name] = now
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 4096)
            try:
                last = float(json.loads(raw)["time"]) if raw else None
            except (ValueError, KeyError, TypeError):
                last = None
            if last is not None and now - last < cooldown:
                return False
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"time": now, "pid": os.getpid()}).encode())
            self._memory_times[name] = now
            return True
        finally:
            os.close(fd)

    # --- the hooks -------------------------------------------------------------------------

    async def _run_command(
        self, name: str, template: str, fields: dict[str, str], trigger: Trigger
    ) -> None:
        if name in self._runs:
            trigger.outcome = "skipped: the previous run is still going"
            log.warning("event=retrain_still_running model=%s", name)
            return
        if self._stopping:
            trigger.outcome = "skipped: the server is stopping"
            return
        self._runs[name] = None
        try:
            argv = [word.format(**fields) for word in shlex.split(template)]
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, ValueError, KeyError, IndexError) as exc:
            self._runs.pop(name, None)
            trigger.outcome = f"error: {exc!r}"
            log.error("event=retrain_command_failed model=%s error=%r", name, exc)
            return
        self._runs[name] = process
        if self._stopping:  # stop() ran while it started: it did not see this process
            await _terminate(process, name)
        try:
            assert process.stdout is not None
            async for line in process.stdout:
                log.info(
                    "event=retrain_output model=%s pid=%d line=%r",
                    name,
                    process.pid,
                    line.decode(errors="replace").rstrip(),
                )
            code = await process.wait()
        finally:
            self._runs.pop(name, None)
        trigger.outcome = f"exit code {code}"
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(level, "event=retrain_finished model=%s exit_code=%d", name, code)

    async def _call_webhook(self, url: str, body: dict[str, Any], trigger: Trigger) -> None:
        def post() -> int:
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5.0) as response:
                return int(response.status)

        try:
            status = await asyncio.to_thread(post)
            trigger.outcome = f"HTTP {status}"
            log.info("event=retrain_webhook model=%s status=%d", body["model"], status)
        except Exception as exc:
            trigger.outcome = f"error: {exc!r}"
            log.error("event=retrain_webhook_failed model=%s error=%r", body["model"], exc)


async def _terminate(process: asyncio.subprocess.Process, name: str) -> None:
    """Stop a retrain still running at shutdown: SIGTERM to its process group, then SIGKILL."""
    if process.returncode is not None:
        return
    log.warning("event=retrain_stopped model=%s pid=%d (the server is stopping)", name, process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), KILL_AFTER_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
