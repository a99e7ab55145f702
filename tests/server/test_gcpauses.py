"""The collector's pauses as a histogram: each collection timed once, by generation, on /metrics."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from loadtests.promscrape import parse, total
from server.gcpauses import NAME, PAUSE_BUCKETS, GcPauseHistogram, GcPauses, install, uninstall
from tests.server.conftest import MakeClient


@pytest.fixture
def pauses() -> Iterator[GcPauses]:
    mine = GcPauses()
    install(mine)
    try:
        yield mine
    finally:
        uninstall(mine)


def _counts(pauses: GcPauses) -> list[int]:
    return [sum(child.counts) for child in pauses.children]


def test_each_collection_is_timed_once_under_its_generation(pauses: GcPauses) -> None:
    install(pauses)  # a second install must not time collections twice
    assert gc.callbacks.count(pauses.hook) == 1
    before = _counts(pauses)
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    after = _counts(pauses)
    # Other collections may run meanwhile (the test's own allocations): at least the forced ones.
    assert after[0] - before[0] >= 1
    assert after[2] - before[2] >= 2
    assert pauses.children[2].sum > 0.0


def test_a_stop_without_its_start_is_not_counted() -> None:
    mine = GcPauses()
    mine.hook("stop", {"generation": 0})  # installed while a collection ran
    assert _counts(mine) == [0, 0, 0]
    mine.hook("start", {"generation": 1})
    mine.hook("stop", {"generation": 1})
    assert _counts(mine) == [0, 1, 0]


def test_the_exposition_is_a_cumulative_histogram_per_generation(pauses: GcPauses) -> None:
    registry = CollectorRegistry()
    GcPauseHistogram(registry, pauses)
    gc.collect(1)
    gc.disable()  # no collection between the exposition and the counts it is compared with
    try:
        samples = parse(generate_latest(registry).decode())
        counts = _counts(pauses)
    finally:
        gc.enable()
    for generation in ("0", "1", "2"):
        buckets = [
            samples[(f"{NAME}_bucket", frozenset({("generation", generation), ("le", le)}))]
            for le in [*(repr(b) for b in PAUSE_BUCKETS), "+Inf"]
        ]
        assert buckets == sorted(buckets)
        count = samples[(f"{NAME}_count", frozenset({("generation", generation)}))]
        assert buckets[-1] == count == counts[int(generation)]
    assert (total(samples, f"{NAME}_count", generation="1") or 0) >= 1
    assert total(samples, f"{NAME}_sum", generation="1") == pytest.approx(pauses.children[1].sum)


async def test_a_served_app_exposes_the_process_pauses(make_client: MakeClient) -> None:
    async with make_client() as client:
        first = parse((await client.get("/metrics")).text)
        gc.collect(2)
        second = parse((await client.get("/metrics")).text)
    full_before = total(first, f"{NAME}_count", generation="2")
    full_after = total(second, f"{NAME}_count", generation="2")
    assert full_before is not None and full_after is not None
    assert full_after >= full_before + 1
