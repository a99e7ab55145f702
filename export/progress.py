"""One line per step on stderr, e.g. ``[3/8] xgb_large: training (700 trees max)… 12.3 s``.

On a terminal the step's name shows as soon as it starts and its time is added when it ends, so a
long step is never a silent wait; elsewhere (logs, pipes) each line is written whole at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Reports the steps of building model ``index`` of ``total``."""

    def __init__(self, name: str, index: int = 1, total: int = 1, stream: TextIO | None = None):
        self.prefix = f"[{index}/{total}] {name}"
        self.stream = stream
        self.quiet = False

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.prefix}: {message}", file=self._out(), flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        out = self._out()
        live = not self.quiet and out.isatty()
        if live:
            print(f"{self.prefix}: {what}…", end="", file=out, flush=True)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if live:
                print(" failed", file=out, flush=True)
            raise
        elapsed = time.perf_counter() - start
        if live:
            print(f" {elapsed:.1f} s", file=out, flush=True)
        else:
            self.say(f"{what}… {elapsed:.1f} s")


def quiet(name: str) -> Progress:
    """A Progress that prints nothing (tests, library use)."""
    progress = Progress(name)
    progress.quiet = True
    return progress
