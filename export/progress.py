"""One line per finished step on stderr, e.g. ``[3/8] xgb_large: training (600 trees)… 12.3 s``."""

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

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.prefix}: {message}", file=self.stream or sys.stderr, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.say(f"{what}… {time.perf_counter() - start:.1f} s")


def quiet(name: str) -> Progress:
    """A Progress that prints nothing (tests, library use)."""
    progress = Progress(name)
    progress.quiet = True
    return progress
