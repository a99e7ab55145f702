"""The feedback-index script runs, and times only the calls after the index filled."""

from __future__ import annotations

import pytest

from loadtests.bench import feedback_index


def test_it_times_one_call_per_32_requests_after_the_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback_index, "CAPACITY", 640)
    for shards in (64, 1):
        times = feedback_index.call_times(shards, 3_200)
        assert len(times) == 3_200 // feedback_index.PER_CALL
