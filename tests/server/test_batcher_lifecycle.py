"""Batcher and runner edge cases: large requests run alone, a closed runner, the batch task's
supervisor, a batch that fills before ``max_delay_ms``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from server.batcher import Batcher
from server.cache.batch import ModelScoreCache
from server.errors import ModelNotReady, ShuttingDown
from server.modelcard import load_card
from server.monitoring import ModelMonitor
from tests.server.test_backpressure import make_batcher


async def test_a_closed_runner_refuses_inference(model_repo: Path, holdout: np.ndarray) -> None:
    batcher = make_batcher(model_repo, max_batch_rows=8, inline_max_cost_us=0.0)
    batcher.runner.close()
    with pytest.raises(ShuttingDown):
        await batcher.runner.infer(holdout[:1])


async def test_a_large_request_stops_at_its_first_failed_part(
    model_repo: Path, holdout: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    batcher = make_batcher(model_repo, max_batch_rows=4, batching=False)
    wrong_width = np.ascontiguousarray(holdout[:40, :-1])  # ONNX Runtime rejects every part
    with caplog.at_level(logging.ERROR, logger="tabserve.batcher"):
        with pytest.raises(Exception, match=r"(?i)dimension|shape|invalid"):
            await batcher.predict(wrong_width, deadline=time.monotonic() + 60, request_id="big")
    failed = [r for r in caplog.records if "event=inference_failed" in r.getMessage()]
    assert len(failed) == 1
    await batcher.stop(timeout_s=1.0)


async def test_a_large_inline_request_lets_others_run_between_its_parts(
    model_repo: Path, holdout: np.ndarray
) -> None:
    batcher = make_batcher(model_repo, max_batch_rows=4, batching=False, max_queue_rows=100_000)
    assert batcher.runner.inline
    deadline = time.monotonic() + 60
    big_rows = np.ascontiguousarray(np.resize(holdout, (400, holdout.shape[1])))
    big = asyncio.ensure_future(batcher.predict(big_rows, deadline=deadline, request_id="big"))
    small = asyncio.ensure_future(
        batcher.predict(holdout[:1], deadline=deadline, request_id="small")
    )
    done, _ = await asyncio.wait({big, small}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {small}
    assert (await big).shape == (400, 2)
    await batcher.stop(timeout_s=1.0)


async def test_a_full_batch_does_not_wait_for_max_delay(
    model_repo: Path, holdout: np.ndarray
) -> None:
    batcher = make_batcher(model_repo, max_batch_rows=8, max_delay_ms=600_000.0)
    batcher.start()
    deadline = time.monotonic() + 3600
    first = asyncio.ensure_future(batcher.predict(holdout[:2], deadline=deadline, request_id="0"))
    for _ in range(5):
        await asyncio.sleep(0)  # the batch task takes up the first request and waits for more
    parts = [first] + [
        asyncio.ensure_future(
            batcher.predict(holdout[i : i + 2], deadline=deadline, request_id=str(i))
        )
        for i in range(2, 8, 2)
    ]
    # The guard only turns a hang (the 10-minute delay) into a failure.
    scores = await asyncio.wait_for(asyncio.gather(*parts), timeout=60)
    assert [s.shape for s in scores] == [(2, 2)] * 4
    assert batcher.stats.batches == 1
    await batcher.stop(timeout_s=1.0)


async def test_a_failed_batch_task_fails_waiting_and_later_requests(
    model_repo: Path, holdout: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    # Two requests of different widths in one batch: joining their rows fails in the batch
    # task itself, outside the inference error handling.
    batcher = make_batcher(model_repo, max_batch_rows=8, max_delay_ms=1.0)
    batcher.start()
    deadline = time.monotonic() + 60
    waiting = [
        asyncio.ensure_future(batcher.predict(rows, deadline=deadline, request_id=str(i)))
        for i, rows in enumerate([holdout[:2], np.ascontiguousarray(holdout[:2, :-1])])
    ]
    with caplog.at_level(logging.ERROR, logger="tabserve.batcher"):
        # The guard only turns a hang into a failure.
        done, _ = await asyncio.wait(waiting, timeout=60)
    assert done == set(waiting)
    for task in waiting:
        with pytest.raises(ModelNotReady):
            task.result()
    assert any("event=batcher_failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelNotReady):
        await batcher.predict(holdout[:1], deadline=deadline, request_id="after")
    await batcher.stop(timeout_s=1.0)


async def test_feedback_finds_the_rows_of_requests_whose_parts_interleave(
    model_repo: Path, holdout: np.ndarray
) -> None:
    card = load_card(model_repo / "logreg" / "1")
    monitor = ModelMonitor(card)
    batcher = make_batcher(model_repo, max_batch_rows=4, batching=False, observer=monitor)
    deadline = time.monotonic() + 60
    a_rows, b_rows = holdout[:12], holdout[12:24]
    a, b = await asyncio.gather(
        batcher.predict(a_rows, deadline=deadline, request_id="a"),
        batcher.predict(b_rows, deadline=deadline, request_id="b"),
    )
    await batcher.stop(timeout_s=1.0)
    monitor.flush()
    positive = card.positive_index
    for request_id, scores in (("a", a), ("b", b)):
        for row in range(len(scores)):
            found = monitor.feedback(request_id=request_id, row=row, label=1).score
            assert found == pytest.approx(float(scores[row, positive]))


@pytest.mark.parametrize("component", [Batcher, ModelScoreCache])
def test_max_batch_rows_comes_from_the_caller(component: type) -> None:
    # One default, in Settings: a constructor default drifts from it (it said 32, then 64).
    parameter = inspect.signature(component).parameters["max_batch_rows"]
    assert parameter.default is inspect.Parameter.empty
