"""Requests arriving, counted where the front doors read them (HTTP and gRPC), so that
background work on the event loop can let a request that has just arrived go first.

The monitor's fold steps (``server.monitoring.monitor``) run as ready callbacks of the loop,
and a step queued before a request's bytes were read runs before that request's handler. A
step that sees reads since it was queued queues itself again instead, behind the request.
"""

from __future__ import annotations


class Activity:
    """A count of reads (one increment per ``data_received``: ~50 ns)."""

    __slots__ = ("reads",)

    def __init__(self) -> None:
        self.reads = 0


ACTIVITY = Activity()
"""The process's count, incremented by ``TabserveHttpProtocol`` and the gRPC front."""
