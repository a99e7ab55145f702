"""The rolling binned window: its totals equal a direct histogram of the rows it should hold."""

from __future__ import annotations

import numpy as np
import pytest

from server.monitoring.window import BinnedWindow

EDGES = [[0.0, 1.0, 2.0], [10.0], [-5.0, 5.0]]


def direct_counts(rows: np.ndarray) -> np.ndarray:
    """Slot counts computed column by column with np.digitize and a missing slot."""
    parts = []
    for j, edges in enumerate(EDGES):
        column = rows[:, j]
        finite = column[~np.isnan(column)]
        counts = np.bincount(np.digitize(finite, edges), minlength=len(edges) + 1)
        parts.append(np.append(counts, np.isnan(column).sum()))
    return np.concatenate(parts)


def random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(loc=[1.0, 10.0, 0.0], scale=[1.0, 1.0, 4.0], size=(n, 3)).astype(np.float32)
    rows[rng.random((n, 3)) < 0.05] = np.nan
    return rows


def test_totals_match_direct_histogram_across_wraparound() -> None:
    rng = np.random.default_rng(0)
    window = BinnedWindow(EDGES, capacity_rows=100, max_age_s=1e9)
    history = []
    for step in range(60):
        batch = random_rows(rng, int(rng.integers(0, 17)))
        history.append(batch)
        window.add(batch, now=float(step))
        held = np.concatenate(history)[-100:]
        assert window.rows == len(held)
        np.testing.assert_array_equal(window.totals, direct_counts(held))


def test_values_on_edges_and_infinities() -> None:
    window = BinnedWindow(EDGES, capacity_rows=10, max_age_s=1e9)
    rows = np.array([[1.0, 10.0, np.inf], [2.0, np.nan, -np.inf]], dtype=np.float32)
    window.add(rows, now=0.0)
    assert window.column_counts(0).tolist() == [0, 0, 1, 1, 0]  # 1.0 -> bin 2, 2.0 -> bin 3
    assert window.column_counts(1).tolist() == [0, 1, 1]  # 10.0 -> bin 1, NaN -> missing
    assert window.column_counts(2).tolist() == [1, 0, 1, 0]


def test_expiry_by_count_keeps_newest_rows() -> None:
    window = BinnedWindow(EDGES, capacity_rows=5, max_age_s=1e9)
    window.add(np.zeros((4, 3), dtype=np.float32), now=0.0)
    window.add(np.full((3, 3), 3.0, dtype=np.float32), now=1.0)
    assert window.rows == 5
    np.testing.assert_array_equal(
        window.totals,
        direct_counts(np.array([[0.0] * 3] * 2 + [[3.0] * 3] * 3, dtype=np.float32)),
    )
    # A batch larger than the window keeps only its newest rows.
    big = np.arange(24, dtype=np.float32).reshape(8, 3)
    window.add(big, now=2.0)
    assert window.rows == 5
    np.testing.assert_array_equal(window.totals, direct_counts(big[-5:]))


def test_expiry_by_time() -> None:
    window = BinnedWindow(EDGES, capacity_rows=1_000, max_age_s=10.0)
    window.add(np.zeros((3, 3), dtype=np.float32), now=0.0)
    window.add(np.ones((2, 3), dtype=np.float32), now=5.0)
    window.expire(9.9)
    assert window.rows == 5
    window.expire(10.5)  # the rows of t=0 are now older than 10 s
    assert window.rows == 2
    assert window.oldest_time() == 5.0
    np.testing.assert_array_equal(window.totals, direct_counts(np.ones((2, 3), dtype=np.float32)))
    window.expire(100.0)
    assert window.rows == 0
    assert window.oldest_time() is None
    assert not window.totals.any()


def test_time_expiry_across_wraparound() -> None:
    window = BinnedWindow(EDGES, capacity_rows=6, max_age_s=3.0)
    for t in range(8):
        window.add(np.full((2, 3), float(t), dtype=np.float32), now=float(t))
    # capacity keeps t=5,6,7; age keeps t >= 4: so t=5..7 (6 rows, wrapped in the ring)
    assert window.rows == 6
    window.expire(8.5)  # keeps t >= 5.5: t=6,7
    assert window.rows == 4
    held = np.array([[6.0] * 3] * 2 + [[7.0] * 3] * 2, dtype=np.float32)
    np.testing.assert_array_equal(window.totals, direct_counts(held))


def test_rejects_bad_construction() -> None:
    with pytest.raises(ValueError):
        BinnedWindow(EDGES, capacity_rows=0, max_age_s=1.0)
    with pytest.raises(ValueError):
        BinnedWindow([], capacity_rows=1, max_age_s=1.0)


def test_float32_binning_equals_float64_digitize_next_to_edges() -> None:
    # Edges that float32 cannot represent, integer edges, and an edge past float32's range.
    edges = [[0.1, 0.2, 1.0 / 3.0, 1.0, 2.0, 1e39]]
    window = BinnedWindow(edges, capacity_rows=10_000, max_age_s=1e9)
    around = np.array([0.1, 0.2, 1.0 / 3.0, 1.0, 2.0, 3.4e38], dtype=np.float32)
    near = np.concatenate(
        [
            around,
            np.nextafter(around, np.float32(np.inf)),
            np.nextafter(around, np.float32(-np.inf)),
            np.array([np.inf, -np.inf, 0.0], dtype=np.float32),
        ]
    ).reshape(-1, 1)
    slots = window.slots(near)[:, 0]
    expected = np.digitize(near[:, 0].astype(np.float64), np.array(edges[0]))
    np.testing.assert_array_equal(slots, expected)


def test_rows_keep_their_own_arrival_times() -> None:
    window = BinnedWindow(EDGES, capacity_rows=4, max_age_s=10.0)
    rows = np.arange(18, dtype=np.float32).reshape(6, 3)
    # Six rows added late, at t=19, that arrived at t=5..10: the ring keeps the newest four
    # (t=7..10), and of those the ones at most 10 s old at t=19 (t=9, 10).
    window.add(rows, now=19.0, arrived=np.array([5.0, 6.0, 7.0, 8.0, 9.0, 10.0]))
    assert window.rows == 2
    assert window.oldest_time() == 9.0
    np.testing.assert_array_equal(window.totals, direct_counts(rows[-2:]))
    # Three more wrap around the ring and push t=9 out.
    window.add(np.zeros((3, 3), dtype=np.float32), now=20.0, arrived=np.array([20.0] * 3))
    assert window.rows == 4
    assert window.oldest_time() == 10.0
    window.expire(29.0)  # t=10 is now older than 10 s
    assert window.rows == 3
    assert window.oldest_time() == 20.0
    np.testing.assert_array_equal(window.totals, direct_counts(np.zeros((3, 3), np.float32)))


def test_more_edges_than_a_uint16_counts() -> None:
    edges = [[float(e) for e in range(70_000)]]
    window = BinnedWindow(edges, capacity_rows=10, max_age_s=1e9)
    values = np.array([[69_999.5], [300.5], [-1.0]], dtype=np.float32)
    expected = np.digitize(values[:, 0].astype(np.float64), np.array(edges[0]))
    np.testing.assert_array_equal(window.slots(values)[:, 0], expected)


def test_a_long_stream_stays_at_the_row_bound_with_exact_totals() -> None:
    """A soak in miniature: 200,000 rows through a 1,000-row window keep it at 1,000 rows, its
    totals equal to a direct histogram of those rows."""
    rng = np.random.default_rng(1)
    window = BinnedWindow(EDGES, capacity_rows=1_000, max_age_s=1e9)
    last = np.empty((0, 3), dtype=np.float32)
    for step in range(2_000):
        batch = random_rows(rng, 100)
        window.add(batch, now=float(step))
        last = np.concatenate([last, batch])[-1_000:]
    assert window.rows == 1_000
    assert int(window.totals.sum()) == 1_000 * len(EDGES)
    np.testing.assert_array_equal(window.totals, direct_counts(last))


def test_code_columns_bin_like_digitize() -> None:
    """Columns with half-integer edges (category codes, class indices) are binned by arithmetic:
    the same bins as comparing with the edges, for codes, fractions, extremes and NaN."""
    edges = [[-0.5, 0.5, 1.5, 2.5], [0.0, 1.0, 2.0], [0.5, 1.5], [-0.5]]
    window = BinnedWindow(edges, capacity_rows=1_000, max_age_s=1e9)
    rng = np.random.default_rng(5)
    codes = rng.integers(-3, 6, size=(200, 4)).astype(np.float32)
    codes[:20] += rng.random((20, 4)).astype(np.float32)  # fractions between codes
    codes[20:30] = np.array([np.inf, -np.inf, 3.4e38, np.nan], dtype=np.float32)
    codes[30:40] = np.array([-0.5, 0.5, 1.5, -0.5], dtype=np.float32)  # exactly on edges
    slots = window.slots(codes)
    for j, column_edges in enumerate(edges):
        column = codes[:, j]
        expected = np.digitize(column.astype(np.float64), np.array(column_edges))
        expected = np.where(np.isnan(column), len(column_edges) + 1, expected)
        np.testing.assert_array_equal(slots[:, j] - window.offsets[j], expected, err_msg=str(j))
    window.add(codes, now=0.0)
    assert window.column_counts(0).sum() == 200
