"""Prometheus metrics of the serving path, in a registry per app (never the global one).

Several apps can live in one process (the tests create many), so every metric hangs off a
:class:`ServerMetrics` that owns its own ``CollectorRegistry``. Other parts of the server (the
cache, monitoring) register their metrics on ``ServerMetrics.registry``; ``GET /metrics`` renders
that one registry.

Cost: on the request path only one histogram observation and one counter increment are made per
request (latency, requests), both lock-free (the event loop is their only writer); batch-level
metrics (batch size, inference time, queue wait) are observed once per batch, never per row.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

# Request latencies on loopback run from ~50 µs to seconds.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The exposition's Content-Type, e.g. ``text/plain; version=1.0.0; charset=utf-8``."""
MEDIA_TYPE = CONTENT_TYPE.split("; charset=")[0]
"""The same without its charset: Litestar appends ``; charset=utf-8`` to every ``text/`` type
(given the full type, it would send the charset twice)."""


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class Histogram(Collector):
    """A Prometheus histogram for the event-loop thread: ~0.3 µs per observation against
    prometheus_client's ~1 µs (no lock, a bisect instead of a scan of the buckets). Observe only
    from one thread (the event loop); the exposition is the standard histogram format."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = [float(b) for b in buckets]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramChild(self.bounds)
        return child

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip([*self.bounds, float("inf")], child.counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(list(key), buckets, child.sum)
        yield family


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class FastCounter(Collector):
    """A Prometheus counter for the event-loop thread: ~0.05 us per increment against
    prometheus_client's ~1 us (its value sits behind a lock). Increment only from the event loop;
    the exposition is the standard counter format (``<name>_total``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> CounterChild:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = CounterChild()
        return child

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            family.add_metric(list(key), child.value)
        yield family


class ServerMetrics:
    """The serving core's metrics; ``registry`` is where other components add theirs."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.exposition: Callable[[CollectorRegistry], bytes] = generate_latest
        """Renders ``registry`` for ``GET /metrics``; with ``--workers N`` it is replaced by the
        merge of every worker's samples (``server.workershare``)."""
        r = self.registry
        self.request_latency = Histogram(
            "tabserve_request_duration_seconds",
            "Prediction request latency inside the server, by model and HTTP status.",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = FastCounter(
            "tabserve_requests",
            "Prediction requests by model and version (version 'none' when unresolved).",
            ["model", "version"],
            registry=r,
        )
        self.variant_rows = FastCounter(
            "tabserve_variant_rows",
            "Rows answered per rung of a degrading model's ladder (variant 'full': the model).",
            ["model", "version", "variant"],
            registry=r,
        )
        self.cascade_rows = FastCounter(
            "tabserve_cascade_rows",
            "Rows of a cascade model kept at the variant's score or escalated to the full model.",
            ["model", "version", "path"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "tabserve_queue_wait_seconds",
            "Time from enqueue to the start of the batch that ran the request's first rows "
            "(observed once per batch, for its oldest request).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "tabserve_inference_seconds",
            "ONNX Runtime time of one batch (cache misses only).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "tabserve_batch_rows",
            "Rows per batch handed to the batcher (before the cache).",
            ["model", "version"],
            buckets=BATCH_ROWS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "tabserve_queue_rows",
            "Rows waiting in the model version's queue.",
            ["model", "version"],
            registry=r,
        )
        self.rejected = Counter(
            "tabserve_rejected_requests",
            "Requests refused with 503 because the queue was full.",
            ["model", "version"],
            registry=r,
        )
        self.expired = Counter(
            "tabserve_expired_requests",
            "Requests whose deadline passed before they ran (answered 504, never run).",
            ["model", "version"],
            registry=r,
        )
        self.hook_errors = Counter(
            "tabserve_hook_errors",
            "Exceptions raised by a cache or batch-observer hook (caught; predictions unaffected).",
            ["model", "version", "hook"],
            registry=r,
        )
        self.models_loaded = Gauge(
            "tabserve_model_versions_loaded",
            "Model versions currently loaded and serving.",
            registry=r,
        )
        self.model_load_failures = Counter(
            "tabserve_model_load_failures",
            "Model versions refused at load or reload.",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry (of all workers' with N > 1)."""
        return self.exposition(self.registry)
