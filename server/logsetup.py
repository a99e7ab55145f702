"""Structured logs: one ``key=value`` line per event, with the request id where there is one.

Messages are written as ``event=<name> key=value ...``; this formatter prefixes time, level and
logger. No per-request access log (it costs throughput); errors are always logged.
"""

from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"logger={record.name} {record.getMessage()}"
        )
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f" exc={exc!r}"
        return line


def configure_logging(level: str = "info") -> None:
    """Route the ``tabserve`` loggers to stderr as key=value lines (idempotent)."""
    logger = logging.getLogger("tabserve")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_tabserve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(KeyValueFormatter())
        handler._tabserve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
