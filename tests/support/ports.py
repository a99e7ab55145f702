"""Free loopback ports for test servers."""

from __future__ import annotations

from server.process import free_port

__all__ = ["free_port"]
