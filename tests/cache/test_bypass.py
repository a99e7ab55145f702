"""Adaptive bypass: a cache that finds nothing is skipped, and used again once traffic repeats."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from server.batcher import Batcher
from server.cache.batch import ModelScoreCache
from server.cache.bypass import Bypass
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.tiered import TieredCache
from server.metrics import ServerMetrics
from server.modelcard import load_card
from server.runner import Runner


def test_a_window_without_hits_turns_it_on_and_probes_still_look() -> None:
    bypass = Bypass(window_rows=100, probe_window_rows=20, probe_every=4)
    for _ in range(10):
        assert not bypass.skip(10)
        bypass.record(10, 0)
    assert bypass.active
    decisions = [bypass.skip(1) for _ in range(8)]
    assert decisions == [True, True, True, False] * 2  # one batch in four is a probe
    assert bypass.rows_bypassed == 6


def test_hits_in_the_probes_turn_it_off_again() -> None:
    bypass = Bypass(window_rows=100, probe_window_rows=20, probe_every=4)
    bypass.record(100, 0)
    assert bypass.active
    bypass.record(10, 0)
    bypass.record(10, 3)  # the probe window (20 rows) found 15%
    assert not bypass.active
    assert not any(bypass.skip(1) for _ in range(10))


def test_a_few_hits_keep_the_cache_in_use() -> None:
    bypass = Bypass(window_rows=100, min_hit_ratio=0.01)
    bypass.record(100, 1)  # exactly 1%: not below
    assert not bypass.active


async def test_unique_traffic_is_bypassed_and_answers_stay_right(model_repo: Path) -> None:
    version_dir = model_repo / "xgb_small" / "1"
    card = load_card(version_dir)
    runner = Runner(version_dir / card.onnx.file, card)
    runner.warm_up(inline_max_cost_us=60.0, max_batch_rows=64)
    registry = CollectorRegistry()
    tiered = TieredCache(
        MemoryCache(100_000, 1 << 26), None, promote_ttl_s=60, metrics=CacheMetrics(registry)
    )
    cache = ModelScoreCache(card, tiered, ttl_s=60, max_batch_rows=64)
    cache.bypass = Bypass(window_rows=256, probe_window_rows=32, probe_every=8)
    batcher = Batcher(runner, metrics=ServerMetrics(), max_batch_rows=32, cache=cache)
    batcher.start()
    rng = np.random.default_rng(0)
    unique = rng.normal(size=(600, card.input.n_features)).astype(np.float32)
    hot = unique[:4]
    deadline = time.monotonic() + 60

    async def predict(rows: np.ndarray) -> np.ndarray:
        return await batcher.predict(rows, deadline=deadline, request_id="r")

    try:
        got = [await predict(unique[i : i + 1]) for i in range(len(unique))]
        assert cache.bypass.active and cache.bypass.rows_bypassed > 0
        assert cache.describe()["bypassed"] is True
        bypassed_rows = registry.get_sample_value(
            "tabserve_cache_bypassed_rows_total", {"model": card.name}
        )
        assert bypassed_rows == cache.bypass.rows_bypassed
        # Traffic starts repeating a few rows: the probes find them and the cache comes back.
        for _ in range(100):  # 400 requests: 50 probes, more than a probe window
            for i in range(len(hot)):
                await predict(hot[i : i + 1])
        assert not cache.bypass.active
        assert (await cache.lookup(hot))[0].all()
    finally:
        await batcher.stop(timeout_s=5.0)
        await cache.close()
        await tiered.close()
    assert np.allclose(np.concatenate(got), runner.run(unique), atol=1e-6)
