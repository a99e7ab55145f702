"""The server's metrics, scraped twice and differenced, turned into report figures."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from loadtests.promscrape import (
    difference,
    histogram_quantile,
    hit_ratio,
    parse,
    server_figures,
)


def _exposition(
    batches: list[int], waits: list[float], hits: dict[str, int], misses: dict[str, int]
) -> str:
    """Text with the server's metric names, made by prometheus_client itself."""
    r = CollectorRegistry()
    rows = Histogram("tabserve_batch_rows", "", ["model", "version"], registry=r)
    wait = Histogram("tabserve_queue_wait_seconds", "", ["model", "version"], registry=r)
    h = Counter("tabserve_cache_hits", "", ["model", "tier"], registry=r)
    m = Counter("tabserve_cache_misses", "", ["model", "tier"], registry=r)
    for b in batches:
        rows.labels("m", "1").observe(b)
    rows.labels("other", "1").observe(1000)
    for w in waits:
        wait.labels("m", "1").observe(w)
    for tier, n in hits.items():
        h.labels("m", tier).inc(n)
    for tier, n in misses.items():
        m.labels("m", tier).inc(n)
    return generate_latest(r).decode()


def test_figures_from_the_difference_of_two_scrapes() -> None:
    before = parse(_exposition([4], [0.001], {"memory": 10}, {"memory": 10}))
    after = parse(
        _exposition(
            [4, 2, 6, 8],
            [0.001, 0.002, 0.004],
            {"memory": 40, "redis": 5},
            {"memory": 30, "redis": 25},
        )
    )
    figures = server_figures(difference(before, after), model="m")
    assert figures["batches"] == 3
    assert figures["mean_batch_rows"] == pytest.approx((2 + 6 + 8) / 3)
    assert figures["queue_wait_mean_ms"] == pytest.approx(3.0)
    assert figures["cache_hits"] == {"memory": 30.0, "redis": 5.0}
    # 20 memory misses went to Redis: 5 hits there, 15 (=25-... per tier deltas) misses
    assert figures["hit_ratio"] == pytest.approx((30 + 5) / (30 + 5 + 25))
    assert figures["rejected"] is None  # not exported by this fake: None, not an error


def test_hit_ratio_with_one_tier_or_none() -> None:
    assert hit_ratio({"redis": 3.0}, {"redis": 1.0}) == pytest.approx(0.75)
    assert hit_ratio({}, {}) is None


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    r = CollectorRegistry()
    h = Histogram("lat_seconds", "", ["model"], buckets=(0.001, 0.002, 0.005), registry=r)
    for v in [0.0005] * 50 + [0.0015] * 40 + [0.004] * 10:
        h.labels("m").observe(v)
    samples = parse(generate_latest(r).decode())
    # 99th of 100: rank 99 falls in (0.002, 0.005] holding ranks 91..100 -> 0.002 + 0.9 * 0.003
    assert histogram_quantile(samples, "lat_seconds", 0.99, {"model": "m"}) == pytest.approx(0.0047)
    assert histogram_quantile(samples, "lat_seconds", 0.5, {"model": "m"}) == pytest.approx(0.001)
    assert histogram_quantile(samples, "missing", 0.5, {}) is None
