"""Free loopback ports for test servers."""

from __future__ import annotations

from loadtests.serveproc import free_port

__all__ = ["free_port"]
