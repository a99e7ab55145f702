"""The cache benchmark's workloads: seeded Zipf over 10k distinct rows, and rows never repeated."""

from __future__ import annotations

import numpy as np

from loadtests.bench.cache import DISTINCT, unique_bodies, zipf_bodies


def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(12_000, 5)).astype(np.float32)


def test_zipf_is_seeded_skewed_and_draws_from_10k_rows() -> None:
    x = rows()
    a = zipf_bodies(x, 50_000, 1.0, seed=0, draw=0)
    assert a == zipf_bodies(x, 50_000, 1.0, seed=0, draw=0)
    warm = zipf_bodies(x, 5_000, 1.0, seed=0, draw=1)
    assert warm != a[:5_000]  # the warm-up is not a replay of the measured sequence
    distinct = set(a) | set(warm)
    assert len(distinct) <= DISTINCT
    counts = sorted((a.count(b) for b in set(a[:200])), reverse=True)
    assert counts[0] > 50 * counts[-1]  # a few rows are very frequent, most rare


def test_unique_bodies_never_repeat_and_disjoint_offsets_share_nothing() -> None:
    x = rows()
    a = unique_bodies(x, 30_000, offset=1)
    b = unique_bodies(x, 5_000, offset=10)
    assert len(set(a)) == len(a)
    assert not set(a) & set(b)
    assert not set(a) & set(zipf_bodies(x, 10_000, 1.0, seed=0, draw=0))
