"""The server's own view of a run: ``GET /metrics`` scraped before and after, differenced.

Parsed generically with ``prometheus_client``'s text parser; the names below are the server's
(``server/metrics.py``, ``server/cache/metrics.py``). A metric the server does not export gives
``None`` rather than an error, so an older or newer server still yields a report.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

BATCH_ROWS = "tabserve_batch_rows"
QUEUE_WAIT = "tabserve_queue_wait_seconds"
INFERENCE = "tabserve_inference_seconds"
REQUEST_LATENCY = "tabserve_request_duration_seconds"
REJECTED = "tabserve_rejected_requests_total"
EXPIRED = "tabserve_expired_requests_total"
CACHE_HITS = "tabserve_cache_hits_total"
CACHE_MISSES = "tabserve_cache_misses_total"
CACHE_ERRORS = "tabserve_cache_errors_total"
CACHE_TIMEOUTS = "tabserve_cache_timeouts_total"
CACHE_SKIPPED = "tabserve_cache_skipped_total"


def parse(text: str) -> Samples:
    """Every sample of the exposition, keyed by sample name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def scrape(base_url: str, timeout: float = 5.0) -> Samples:
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=timeout) as resp:
        return parse(resp.read().decode("utf-8"))


def difference(before: Samples, after: Samples) -> Samples:
    """``after - before`` per sample (counters and histogram parts; gauges are meaningless here)."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of ``name`` over all label sets matching ``labels``; None if no such sample."""
    wanted = set(labels.items())
    values = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    return sum(values) if values else None


def by_label(samples: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    wanted = set(labels.items())
    out: dict[str, float] = defaultdict(float)
    for (n, ls), v in samples.items():
        if n == name and wanted <= ls:
            out[dict(ls).get(label, "")] += v
    return dict(out)


def _mean(
    samples: Samples, histogram: str, labels: dict[str, str], scale: float = 1.0
) -> float | None:
    s = total(samples, f"{histogram}_sum", **labels)
    c = total(samples, f"{histogram}_count", **labels)
    if s is None or not c:
        return None
    return s / c * scale


def histogram_quantile(
    samples: Samples, histogram: str, q: float, labels: dict[str, str]
) -> float | None:
    """Prometheus-style quantile from cumulative ``_bucket`` counts (linear inside a bucket)."""
    wanted = set(labels.items())
    buckets: dict[float, float] = defaultdict(float)
    for (n, ls), v in samples.items():
        if n == f"{histogram}_bucket" and wanted <= ls:
            buckets[float(dict(ls).get("le", "+Inf"))] += v
    if not buckets:
        return None
    bounds = sorted(buckets)
    total_count = buckets[bounds[-1]]
    if total_count <= 0:
        return None
    rank = q * total_count
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if upper == float("inf"):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (upper - lower) * share
        lower, below = upper, count
    return lower


def server_figures(delta: Samples, model: str | None = None) -> dict[str, Any]:
    """Mean batch size, queue wait, inference time and cache hit ratio over a scrape interval."""
    labels = {"model": model} if model else {}
    hits = by_label(delta, CACHE_HITS, "tier", **labels)
    misses = by_label(delta, CACHE_MISSES, "tier", **labels)
    return {
        "batches": total(delta, f"{BATCH_ROWS}_count", **labels),
        "mean_batch_rows": _mean(delta, BATCH_ROWS, labels),
        "queue_wait_mean_ms": _mean(delta, QUEUE_WAIT, labels, 1000.0),
        "inference_mean_ms": _mean(delta, INFERENCE, labels, 1000.0),
        "server_latency_mean_ms": _mean(delta, REQUEST_LATENCY, labels, 1000.0),
        "server_latency_p99_ms": _scaled(histogram_quantile(delta, REQUEST_LATENCY, 0.99, labels)),
        "rejected": total(delta, REJECTED, **labels),
        "expired": total(delta, EXPIRED, **labels),
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_errors": total(delta, CACHE_ERRORS, **labels),
        "cache_timeouts": total(delta, CACHE_TIMEOUTS, **labels),
        "cache_skipped": by_label(delta, CACHE_SKIPPED, "tier", **labels),
        "hit_ratio": hit_ratio(hits, misses),
    }


def _scaled(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def hit_ratio(hits: dict[str, float], misses: dict[str, float]) -> float | None:
    """Share of looked-up rows answered by any tier.

    Tiers are consulted in order (memory, then Redis for the memory misses), so the rows looked
    up are all hits plus the misses of the last tier that saw traffic.
    """
    tiers = [t for t in ("memory", "redis") if hits.get(t, 0.0) + misses.get(t, 0.0) > 0]
    tiers += [
        t
        for t in sorted(set(hits) | set(misses))
        if t not in tiers and hits.get(t, 0.0) + misses.get(t, 0.0) > 0
    ]
    if not tiers:
        return None
    answered = sum(hits.get(t, 0.0) for t in tiers)
    looked_up = answered + misses.get(tiers[-1], 0.0)
    return answered / looked_up if looked_up else None
