"""Registry lifecycle: a cancelled reload leaks no batcher, and close() waits for every stop."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from server.errors import ShuttingDown
from server.metrics import ServerMetrics
from server.registry import Registry
from server.settings import Settings


def batcher_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("batcher-") and not t.done()]


class CancelOnLog(logging.Handler):
    """Cancels ``task`` when a log line containing ``event`` is emitted (from inside the task)."""

    def __init__(self, task: asyncio.Future[object], event: str) -> None:
        super().__init__()
        self.task = task
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if self.event in record.getMessage():
            self.task.cancel()


async def test_a_reload_cancelled_while_loading_starts_no_batcher(
    model_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(Settings(models_dir=model_repo), ServerMetrics())
    reload = asyncio.ensure_future(registry.reload(in_thread=True))
    # Cancelled right after the first of the two versions loaded, while the second loads.
    handler = CancelOnLog(reload, "event=model_loaded")
    logger = logging.getLogger("tabserve.registry")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="tabserve.registry"):
            with pytest.raises(asyncio.CancelledError):
                await reload
    finally:
        logger.removeHandler(handler)
    assert registry.snapshot.all() == []
    assert batcher_tasks() == []
    await registry.close()


async def test_close_waits_for_a_version_a_cancelled_reload_was_stopping(
    model_repo: Path, holdout: np.ndarray, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    # A long max_delay keeps a request queued, so stopping its version has to drain.
    settings = Settings(models_dir=repo, max_delay_ms=600_000.0, drain_timeout_s=0.2)
    registry = Registry(settings, ServerMetrics())
    await registry.reload(in_thread=False)
    batcher = registry.get("logreg").batcher
    request = asyncio.ensure_future(
        batcher.predict(holdout[:1], deadline=time.monotonic() + 3600, request_id="r")
    )
    shutil.rmtree(repo / "logreg")
    reload = asyncio.ensure_future(registry.reload())
    for _ in range(100):  # until the reload began stopping logreg/1
        if not batcher.accepting:
            break
        await asyncio.sleep(0)
    assert not batcher.accepting
    reload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reload
    await registry.close()
    assert batcher_tasks() == []
    assert request.done()
    with pytest.raises(ShuttingDown):
        request.result()
