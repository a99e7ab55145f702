"""A prediction log on a tmp directory, started with a real app core, and ways to read it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from server.core import Core
from server.metrics import ServerMetrics
from server.predlog import PredictionLogExtension
from server.predlog.format import log_files
from server.predlog.metrics import PredictionLogCollector
from server.registry import Registry
from server.settings import Settings


class RunningLog:
    """A started extension, the app registry its metrics are on (until it stops), and a registry
    of the test's with the same metrics (to read them after the stop too)."""

    def __init__(self, ext: PredictionLogExtension, metrics: ServerMetrics) -> None:
        self.ext = ext
        self.metrics = metrics
        self.registry = CollectorRegistry()
        self.registry.register(PredictionLogCollector(ext.counts))

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    async def stop(self) -> None:
        await self.ext.stop()


Starter = Callable[..., Any]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "predlog"


@pytest.fixture
async def start_log(log_dir: Path) -> AsyncIterator[Starter]:
    """``await start_log(**settings)``: a started log (stopped at teardown if still running)."""
    running: list[RunningLog] = []

    async def start(*, ext_kwargs: dict[str, Any] | None = None, **fields: Any) -> RunningLog:
        fields = {"prediction_log_dir": log_dir, "prediction_log_rate": 1.0, **fields}
        settings = Settings(models_dir=log_dir.parent / "models", **fields)
        ext = PredictionLogExtension(settings, **{"poll_s": 0.02, "seed": 0, **(ext_kwargs or {})})
        metrics = ServerMetrics()
        await ext.start(Core(settings, metrics, Registry(settings, metrics)))
        log = RunningLog(ext, metrics)
        running.append(log)
        return log

    yield start
    for log in running:
        await log.ext.stop()


def finished(root: Path, kind: str = "rows", model: str | None = None) -> list[Path]:
    """The finished files of ``kind`` (of ``model``), oldest first."""
    files = [f for f in log_files(root) if f.kind == kind and model in (None, f.model)]
    return [f.path for f in sorted(files, key=lambda f: (f.epoch_ms, f.counter))]


def read(root: Path, kind: str = "rows", model: str | None = None) -> pa.Table:
    """Every finished file of ``kind`` (of ``model``), concatenated oldest first."""
    tables = [pq.read_table(p) for p in finished(root, kind, model)]
    assert tables, f"no {kind} files under {root}"
    return pa.concat_tables(tables)
