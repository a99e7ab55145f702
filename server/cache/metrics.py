"""Prometheus metrics of the cache, registered on the registry the caller passes in.

=========================================  ==========  =============================================
name                                       labels      meaning
=========================================  ==========  =============================================
tabserve_cache_hits_total                  model,tier  rows answered by that tier
tabserve_cache_misses_total                model,tier  rows that tier did not have (incl. failures)
tabserve_cache_errors_total                model,tier, remote calls that failed (connection, auth,
                                           op          protocol); their rows count as misses
tabserve_cache_timeouts_total              model,tier, remote calls that exceeded the timeout
                                           op
tabserve_cache_skipped_total               model,tier, remote calls not made: breaker open or write
                                           op          queue full
tabserve_cache_written_bytes_total         model,tier  bytes of keys and values written
tabserve_cache_bypassed_rows_total         model       rows run without the cache while it was
                                                       bypassed (``server.cache.bypass``)
tabserve_cache_roundtrip_seconds           tier,op     one remote call (a whole batch), not per row
tabserve_cache_circuit_state               tier        0 closed, 1 half-open, 2 open
=========================================  ==========  =============================================

``tier`` is ``response`` (the response memo, ``server.cache.memo``: hits only, its misses go on to
the row cache), ``memory`` or ``redis``; ``op`` is ``get``, ``set``, ``generation`` or ``flush``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.metrics import FastCounter

RESPONSE = "response"
MEMORY = "memory"
REDIS = "redis"

# 50 µs (a loopback round trip) up to the slowest useful timeout.
_RTT_BUCKETS = (
    0.00005,
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    1.0,
)


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Hits and misses move on every lookup, on the event loop only: lock-free counters.
        self.hits = FastCounter(
            "tabserve_cache_hits",
            "Rows answered by a cache tier.",
            ["model", "tier"],
            registry=registry,
        )
        self.misses = FastCounter(
            "tabserve_cache_misses",
            "Rows a cache tier did not have (failed calls included).",
            ["model", "tier"],
            registry=registry,
        )
        self.bypassed = FastCounter(
            "tabserve_cache_bypassed_rows",
            "Rows run without the cache while it was bypassed (recent lookups found ~nothing).",
            ["model"],
            registry=registry,
        )
        self.errors = Counter(
            "tabserve_cache_errors",
            "Remote cache calls that failed; their rows are misses.",
            ["model", "tier", "op"],
            registry=registry,
        )
        self.timeouts = Counter(
            "tabserve_cache_timeouts",
            "Remote cache calls that timed out; their rows are misses.",
            ["model", "tier", "op"],
            registry=registry,
        )
        self.skipped = Counter(
            "tabserve_cache_skipped",
            "Remote cache calls not made (breaker open, queue full).",
            ["model", "tier", "op"],
            registry=registry,
        )
        self.written_bytes = Counter(
            "tabserve_cache_written_bytes",
            "Bytes of keys and values written to a cache tier.",
            ["model", "tier"],
            registry=registry,
        )
        self.roundtrip = Histogram(
            "tabserve_cache_roundtrip_seconds",
            "Duration of one remote cache call (whole batch).",
            ["tier", "op"],
            buckets=_RTT_BUCKETS,
            registry=registry,
        )
        self.circuit_state = Gauge(
            "tabserve_cache_circuit_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["tier"],
            registry=registry,
        )
