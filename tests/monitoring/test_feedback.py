"""Live quality: labels matched to served rows by request id or row hash."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from server.cache.keys import row_digests
from server.errors import InvalidInput, UnknownFeedbackId
from server.modelcard import ModelCard
from server.monitoring import ModelMonitor, MonitorParams, row_hash
from server.monitoring.feedback import PRUNE_SHARDS, SHARDS, ServedRows
from tests.monitoring.cards import class_scores
from tests.monitoring.conftest import FakeClock


def monitor_with_rows(
    card: ModelCard, clock: FakeClock, positive: list[float], **params: int
) -> tuple[ModelMonitor, np.ndarray]:
    monitor = ModelMonitor(card, MonitorParams(**params), clock=clock)
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(len(positive), card.input.n_features)).astype(np.float32)
    monitor.observe(rows, class_scores(np.array(positive)), [("req", 0, len(positive))])
    return monitor, rows


def test_quality_on_a_known_set(fraud_card: ModelCard, clock: FakeClock) -> None:
    t = fraud_card.threshold
    hi, lo = min(1.0, t + 0.2), max(0.0, t - 0.2)
    # predicted: P P P N N N ; labels: 1 1 0 1 0 0  -> tp 2, fp 1, fn 1, tn 2
    scores = [hi, hi, hi, lo, lo, lo]
    labels = [1, 1, 0, 1, 0, 0]
    monitor, _ = monitor_with_rows(fraud_card, clock, scores)
    for i, label in enumerate(labels):
        result = monitor.feedback(request_id="req", row=i, label=label)
        assert result.matched_by == "request_id"
        assert result.predicted_positive == (i < 3)
        assert result.score == pytest.approx(scores[i], abs=1e-6)
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == 6
    assert (quality["true_positives"], quality["false_positives"]) == (2, 1)
    assert quality["false_negatives"] == 1
    assert quality["precision"] == pytest.approx(2 / 3)
    assert quality["recall"] == pytest.approx(2 / 3)
    assert quality["f1"] == pytest.approx(2 / 3)
    s = np.array(scores, dtype=np.float32).astype(np.float64)
    assert quality["brier"] == pytest.approx(float(np.mean((s - np.array(labels)) ** 2)))
    assert quality["mean_score"] == pytest.approx(float(s.mean()))
    assert quality["observed_positive_rate"] == pytest.approx(0.5)
    assert quality["reference"]["precision"] == fraud_card.metrics.precision


def test_feedback_by_row_hash(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor, rows = monitor_with_rows(fraud_card, clock, [0.9, 0.1, 0.2])
    result = monitor.feedback(row_hash=row_hash(rows[1]), label=1)
    assert result.matched_by == "row_hash"
    assert result.score == pytest.approx(0.1)
    # Rows served after the first hash lookup are found too.
    more = np.full((2, fraud_card.input.n_features), 7.0, dtype=np.float32)
    more[1, 0] = 8.0
    monitor.observe(more, class_scores(np.array([0.3, 0.4])), [("a", 0, 1), ("b", 0, 1)])
    assert monitor.feedback(row_hash=row_hash(more[1]).upper(), label=0).score == pytest.approx(0.4)


def test_second_label_for_a_row_replaces_the_first(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor, _ = monitor_with_rows(fraud_card, clock, [0.99])
    assert not monitor.feedback(request_id="req", label=0).replaced
    assert monitor.feedback(request_id="req", label=1).replaced
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == 1
    assert quality["labels_total"] == 2
    assert quality["observed_positive_rate"] == 1.0


def test_unknown_and_forgotten_rows(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor, rows = monitor_with_rows(fraud_card, clock, [0.5] * 3, feedback_capacity=4)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="nope", label=1)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="req", row=3, label=1)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(row_hash="0" * 32, label=1)
    newer = np.zeros((2, fraud_card.input.n_features), dtype=np.float32)
    monitor.observe(newer, class_scores(np.array([0.1, 0.2])), [("new", 0, 2)])
    # Capacity 4: rows 0 of "req" is forgotten, rows 1 and 2 are still there.
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="req", row=0, label=1)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(row_hash=row_hash(rows[0]), label=1)
    monitor.feedback(request_id="req", row=2, label=1)
    monitor.feedback(row_hash=row_hash(rows[1]), label=1)
    monitor.observe(newer, class_scores(np.array([0.1, 0.2])), [("newest", 0, 2)])
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="req", row=2, label=1)


def test_invalid_feedback(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor, _ = monitor_with_rows(fraud_card, clock, [0.5])
    with pytest.raises(InvalidInput):
        monitor.feedback(request_id="req", label=2)
    with pytest.raises(InvalidInput):
        monitor.feedback(request_id="req", label=True)
    with pytest.raises(InvalidInput):
        monitor.feedback(label=1)
    with pytest.raises(InvalidInput):
        monitor.feedback(request_id="req", row_hash="00", label=1)


def test_quality_window_rolls(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor, _ = monitor_with_rows(fraud_card, clock, [0.99] * 5, quality_window_labels=3)
    for i in range(5):
        monitor.feedback(request_id="req", row=i, label=0 if i < 2 else 1)
    quality = monitor.snapshot()["quality"]
    assert quality["labels"] == 3
    assert quality["precision"] == 1.0  # the two negatives rolled out
    assert quality["recall"] == 1.0


def test_no_labels_gives_none(fraud_card: ModelCard, clock: FakeClock) -> None:
    quality = ModelMonitor(fraud_card, clock=clock).snapshot()["quality"]
    assert quality["labels"] == 0
    assert quality["precision"] is quality["recall"] is quality["f1"] is quality["brier"] is None


def test_request_split_across_batches_is_joined(fraud_card: ModelCard, clock: FakeClock) -> None:
    monitor = ModelMonitor(fraud_card, clock=clock)
    rows = np.zeros((100, fraud_card.input.n_features), dtype=np.float32)
    positive = np.linspace(0.0, 0.99, 100)
    scores = class_scores(positive)
    # The batcher's split of a 100-row request "big" with max_batch_rows=64, "small" after it.
    monitor.observe(rows[:64], scores[:64], [("big", 0, 64)])
    monitor.observe(
        np.concatenate([rows[64:], rows[:2]]),
        np.concatenate([scores[64:], class_scores(np.array([0.5, 0.6]))]),
        [("big", 64, 36), ("small", 0, 2)],
    )
    assert monitor.feedback(request_id="big", row=70, label=1).score == pytest.approx(positive[70])
    assert monitor.feedback(request_id="big", row=3, label=1).score == pytest.approx(positive[3])
    assert monitor.feedback(request_id="small", row=1, label=1).score == pytest.approx(0.6)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="big", row=100, label=1)
    # A reused id that does not continue the previous part starts over: newest wins.
    monitor.observe(rows[:1], class_scores(np.array([0.25])), [("big", 0, 1)])
    assert monitor.feedback(request_id="big", row=0, label=1).score == pytest.approx(0.25)


def test_parts_of_a_request_are_found_in_any_order_and_between_others(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    monitor = ModelMonitor(fraud_card, clock=clock)
    rows = np.zeros((4, fraud_card.input.n_features), dtype=np.float32)
    # Two 4-row requests run alone in 2-row parts, interleaved; "b" arrives last part first.
    monitor.observe(rows[:2], class_scores(np.array([0.10, 0.11])), [("a", 0, 2)])
    monitor.observe(rows[:2], class_scores(np.array([0.22, 0.23])), [("b", 2, 2)])
    monitor.observe(rows[:2], class_scores(np.array([0.12, 0.13])), [("a", 2, 2)])
    monitor.observe(rows[:2], class_scores(np.array([0.20, 0.21])), [("b", 0, 2)])
    for request_id, expected in (("a", [0.10, 0.11, 0.12, 0.13]), ("b", [0.20, 0.21, 0.22, 0.23])):
        for row, score in enumerate(expected):
            found = monitor.feedback(request_id=request_id, row=row, label=1).score
            assert found == pytest.approx(score)
    with pytest.raises(UnknownFeedbackId):
        monitor.feedback(request_id="a", row=4, label=1)


def test_row_hash_is_the_cache_digest_of_the_canonical_row(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    row = np.arange(fraud_card.input.n_features, dtype=np.float32)
    assert row_hash(row) == row_digests(row[None, :])[0].hex()
    negative_zero = row.copy()
    negative_zero[0] = -0.0
    assert row_hash(negative_zero) == row_hash(row)  # row[0] is 0.0
    nan_a, nan_b = row.copy(), row.copy()
    nan_a[3] = np.nan
    nan_b.view(np.uint32)[3] = 0x7FC00001  # another NaN payload
    assert np.isnan(nan_b[3])
    assert row_hash(nan_a) == row_hash(nan_b)
    monitor = ModelMonitor(fraud_card, clock=clock)
    monitor.observe(nan_b[None, :], class_scores(np.array([0.4])), [("n", 0, 1)])
    assert monitor.feedback(row_hash=row_hash(nan_a), label=0).score == pytest.approx(0.4)


@pytest.mark.parametrize("rows_per_request", [1, 16])
def test_a_long_stream_of_fresh_rows_keeps_every_feedback_structure_at_its_bound(
    fraud_card: ModelCard, clock: FakeClock, rows_per_request: int
) -> None:
    """A soak in miniature: 20,000 never-repeating rows, requests with the longest ids a client
    may send (128 characters), a row-hash lookup now and then. The ring, the request index and
    the hash index stay within ``feedback_capacity``; the quality window within its labels."""
    capacity = 1_000
    monitor = ModelMonitor(
        fraud_card,
        MonitorParams(feedback_capacity=capacity, quality_window_labels=50),
        clock=clock,
    )
    rng = np.random.default_rng(5)
    f = fraud_card.input.n_features
    per_batch = 4 * rows_per_request
    for batch in range(20_000 // per_batch):
        rows = rng.normal(size=(per_batch, f)).astype(np.float32)
        ids = [(f"{batch:08d}-{r}".ljust(128, "x"), 0, rows_per_request) for r in range(4)]
        monitor.observe(rows, class_scores(rng.random(per_batch)), ids)
        clock.advance(0.01)
        if batch % 25 == 0:
            monitor.feedback(row_hash=row_hash(rows[0]), label=1)
            monitor.feedback(request_id=ids[-1][0], row=rows_per_request - 1, label=0)
            observed = monitor.snapshot()["observed"]
            assert observed["feedback_rows_remembered"] <= capacity
            assert observed["feedback_requests_indexed"] <= capacity // rows_per_request + 4
            assert observed["feedback_hashes_indexed"] <= capacity
    monitor.feedback(row_hash=row_hash(rows[-1]), label=1)  # hashes every row not yet hashed
    snap = monitor.snapshot()
    observed = snap["observed"]
    assert observed["feedback_rows_remembered"] == observed["feedback_capacity"] == capacity
    assert capacity // rows_per_request <= observed["feedback_requests_indexed"]
    assert observed["feedback_requests_indexed"] <= capacity // rows_per_request + 4
    assert observed["feedback_hashes_indexed"] == capacity
    assert snap["quality"]["labels"] == min(50, snap["quality"]["labels_total"])
    assert snap["window"]["rows"] == snap["window"]["max_rows"]


def test_the_newest_of_identical_rows_wins_across_the_ring_wrap(
    fraud_card: ModelCard, clock: FakeClock
) -> None:
    monitor = ModelMonitor(fraud_card, MonitorParams(feedback_capacity=5), clock=clock)
    f = fraud_card.input.n_features
    same = np.full((1, f), 3.0, dtype=np.float32)
    other = np.arange(3 * f, dtype=np.float32).reshape(3, f)
    monitor.observe(same, class_scores(np.array([0.1])), [("a", 0, 1)])
    assert monitor.feedback(row_hash=row_hash(same[0]), label=1).score == pytest.approx(0.1)
    monitor.observe(other, class_scores(np.array([0.5, 0.5, 0.5])), [("b", 0, 3)])
    monitor.observe(same, class_scores(np.array([0.2])), [("c", 0, 1)])
    monitor.observe(other[:2], class_scores(np.array([0.5, 0.5])), [("d", 0, 2)])  # wraps
    assert monitor.feedback(row_hash=row_hash(same[0]), label=1).score == pytest.approx(0.2)
    monitor.observe(other, class_scores(np.array([0.5, 0.5, 0.5])), [("e", 0, 3)])
    with pytest.raises(UnknownFeedbackId):  # both copies forgotten now
        monitor.feedback(row_hash=row_hash(same[0]), label=1)
    for bad in ("", "zz" * 16, "0" * 31, "0" * 34, " " + "0" * 31, "é" * 32):
        with pytest.raises(UnknownFeedbackId):
            monitor.feedback(row_hash=bad, label=1)


def test_the_request_index_holds_nothing_the_collector_tracks() -> None:
    """Under steady traffic each request added to the index is matched by one pruned from it, so
    the young generation's count stays flat and no young collection runs: tracked entries would
    pile up in it (200,000 tuples at the default capacity, a 52 ms collection when traffic
    changed). One-part requests are one int each; only a split request holds a tuple."""
    served = ServedRows(capacity=1_000, n_features=2)
    rows = np.zeros((3, 2), dtype=np.float32)
    scores = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    for k in range(2_000):
        served.record(rows[:1], scores[:1], [(f"r{k}", 0, 1)])
    served.record(rows[:2], scores[:2], [("split", 5, 2)])
    served.record(rows, scores, [("split", 0, 2), ("late", 2**31, 1)])
    indexed = served.requests_indexed  # (prunes every shard first)
    values = [v for shard in served._by_request for v in shard.values()]
    assert sum(map(gc.is_tracked, values)) == 1  # "split", in two parts
    assert indexed == len(values) <= 1_000
    assert served.score(served.find_by_request("r1999", 0)) == pytest.approx(0.1)
    assert served.score(served.find_by_request("split", 6)) == pytest.approx(0.2)
    assert served.score(served.find_by_request("split", 1)) == pytest.approx(0.2)
    assert served.score(served.find_by_request("late", 2**31)) == pytest.approx(0.3)
    with pytest.raises(UnknownFeedbackId):
        served.find_by_request("r0", 0)  # pruned with its row


@pytest.mark.parametrize(("id_length", "low", "high"), [(8, 160, 215), (128, 270, 345)])
def test_the_request_index_holds_what_the_docs_say_per_request(
    id_length: int, low: int, high: int
) -> None:
    """docs/monitoring.md: about 185 bytes per one-row request with a short id, 305 with the
    longest (128 characters), the id string included (tracemalloc, 100,000 requests)."""
    n = 100_000
    served = ServedRows(capacity=n, n_features=24)
    row = np.zeros((1, 24), dtype=np.float32)
    score = np.zeros(1, dtype=np.float32)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(n):  # ids made here, held by the index only
            served.record(row, score, [(f"{k:0{id_length}d}", 0, 1)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert served.requests_indexed == n
    assert low < held / n < high, held / n


def test_the_request_index_is_spread_over_small_shards() -> None:
    """A dict that takes and drops keys at the same rate rebuilds its whole table now and then,
    in one go (4-20 ms of the event loop for 100,000 ids): split by the id's hash, each shard
    holds about 1/SHARDS of the ids, and each is pruned from its own front."""
    served = ServedRows(capacity=SHARDS * 100, n_features=1)
    row, score = np.zeros((1, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)
    for k in range(3 * served.capacity):
        served.record(row, score, [(f"req-{k}", 0, 1)])
    # Each call prunes PRUNE_SHARDS shards in turn: an id outlives its row by at most one
    # round of the shards, SHARDS / PRUNE_SHARDS calls of one request.
    held = sum(len(shard) for shard in served._by_request)
    assert served.capacity <= held <= served.capacity + SHARDS // PRUNE_SHARDS
    assert served.requests_indexed == served.capacity  # pruned whole first
    sizes = [len(shard) for shard in served._by_request]
    assert sum(sizes) == served.capacity
    assert max(sizes) < 2 * served.capacity / SHARDS
    for shard in served._by_request:  # each in seq order, all within the ring
        seqs = [part >> 64 for part in shard.values()]
        assert seqs == sorted(seqs) and seqs[0] >= served.oldest_seq


def test_an_id_reused_before_its_stale_entry_is_pruned_starts_afresh() -> None:
    """An id's entry may outlive its rows until the prune comes round to its shard. A new
    request under that id must not be joined to (or cut short by) the forgotten parts."""
    served = ServedRows(capacity=4, n_features=1, shards=SHARDS)
    row, score = np.zeros((2, 1), dtype=np.float32), np.array([0.1, 0.2], dtype=np.float32)
    mine = hash("reused") & (SHARDS - 1)
    served._prune_next = (mine + 1) % SHARDS  # the prune starts just past its shard
    served.record(row, score, [("reused", 0, 2)])  # rows 0-1 of the first request: seqs 0-1
    for k in range(2):  # four more rows: seqs 0-1 leave the ring
        served.record(row, score, [(f"other-{k}", 0, 2)])
    assert served.oldest_seq == 2
    assert len(served._by_request[mine]) >= 1  # the stale entry is still there
    # The second request under the same id, split: rows 2 first, then rows 0-1 (which overlap
    # the forgotten first request's rows, and must not throw away row 2).
    served.record(row[:1], score[:1], [("reused", 2, 1)])
    served.record(row, score, [("reused", 0, 2)])
    assert served.score(served.find_by_request("reused", 2)) == pytest.approx(0.1)
    assert served.score(served.find_by_request("reused", 1)) == pytest.approx(0.2)
    entry = served._by_request[mine]["reused"]
    assert isinstance(entry, tuple) and len(entry) == 2  # its two parts, no stale one
