"""The contract between the app and its add-ons (the cache, monitoring).

It lives apart from ``server.app`` so that the extensions and the app import it, not each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar.types import ControllerRouterHandler

from server.batcher import BatchObserver, ScoreCache
from server.core import Core
from server.modelcard import ModelCard


class Extension:
    """A server add-on. Override what you need; every method has a do-nothing default.

    Order of calls: ``route_handlers()`` when the app is built; in the lifespan ``start(core)``
    before any model loads (so ``cache_for`` / ``observer_for`` can use what ``start`` opened),
    then ``cache_for(card)`` / ``observer_for(card)`` once per model version as it loads (also on
    reload); ``draining()`` once when shutdown starts (the server stopped listening; the batchers
    start draining); ``stop()`` after every batcher has drained, in reverse order, even after a
    failure.
    """

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        """Extra routes (guard admin ones with ``server.routes_admin.admin_guard``)."""
        return ()

    async def start(self, core: Core) -> None:
        """Open loop-bound resources (Redis pools, tasks); register metrics on core.metrics."""

    def draining(self) -> None:
        """Shutdown started: stop taking new work (on the event loop; schedule, do not block)."""

    async def stop(self) -> None:
        """Close what ``start`` opened."""

    def cache_for(self, card: ModelCard) -> ScoreCache | None:
        """The score cache of one model version, or None for no cache."""
        return None

    def observer_for(self, card: ModelCard, *, variant: str | None = None) -> BatchObserver | None:
        """The batch observer of one model version (``variant``: of one of its ladder variants,
        whose ``card`` carries the variant's threshold and metrics), or None."""
        return None


class FanOut:
    """Several observers behind one (each one's failure is its own)."""

    def __init__(self, observers: list[BatchObserver]) -> None:
        self.observers = observers

    def observe(self, rows: Any, scores: Any, requests: Any) -> None:
        errors: list[Exception] = []
        for observer in self.observers:
            try:
                observer.observe(rows, scores, requests)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
