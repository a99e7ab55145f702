"""Waiting in async tests for something another task or thread does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Return once ``check()`` is true; fail the test after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
