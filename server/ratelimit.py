"""Two small limiters for hostile traffic: a log line at most every so often, and a per-client
failure budget.

:class:`ThrottledLog` keeps a flood (refused connections, failed admin logins) from flooding the
log: the first event is logged at once, later ones at most once per interval, each line saying how
many were suppressed since the previous one. :class:`FailureBudget` counts failures per client
address in a fixed window (one minute) and says when a client has used its budget; its memory is
bounded (the oldest clients are forgotten first).

Both use ``time.monotonic()`` and run on the event loop (no locks).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any


class ThrottledLog:
    """Log an event at most once per ``interval_s``, with the count of events since the last."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self.interval_s
        suppressed, self._suppressed = self._suppressed, 0
        self.logger.log(level, msg + " suppressed_since_last=%d", *args, suppressed)


class FailureBudget:
    """At most ``limit`` failures per client within ``window_s``; then :meth:`blocked_for` > 0."""

    def __init__(self, limit: int, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        # client -> (window start, failures in the window); insertion order = oldest first
        self._clients: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: it may try now)."""
        if self.limit <= 0:
            return 0.0
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        start, failures = entry
        left = start + self.window_s - time.monotonic()
        if left <= 0:
            del self._clients[client]
            return 0.0
        return left if failures >= self.limit else 0.0

    def failed(self, client: str) -> int:
        """Count a failure of ``client``; returns its failures in the current window."""
        now = time.monotonic()
        entry = self._clients.pop(client, None)
        if entry is None or now - entry[0] >= self.window_s:
            entry = (now, 0)
        entry = (entry[0], entry[1] + 1)
        self._clients[client] = entry
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return entry[1]
