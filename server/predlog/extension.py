"""The prediction log as an app extension: a sampling observer per served version, one writer.

``PredictionLogExtension(settings)`` (``server.app.default_extensions`` adds it when
``TABSERVE_PREDICTION_LOG_DIR`` is set):

- ``start(core)``: registers its metrics (:mod:`server.predlog.metrics`) on
  ``core.metrics.registry`` and starts the writer thread (:mod:`server.predlog.writer`);
- ``observer_for(card)``: a :class:`SamplingObserver` for each model version the registry loads,
  at the model's rate (``prediction_log_rates`` else ``prediction_log_rate``; none at rate 0,
  none for ladder variants: the log holds what the version answered);
- :meth:`PredictionLogExtension.label`: a label from ``POST .../feedback``, queued for the labels
  files;
- ``stop()``: writes what is queued, closes the files (renamed to their final names), joins the
  thread, unregisters the metrics.

On the event loop (after each answered batch) the observer only draws the sample, copies the
sampled rows and scores, and queues them; the answers, Arrow and the files are the writer
thread's. Nothing here raises into the batcher or the feedback route: a failure is counted
(``tabserve_prediction_log_errors_total``) and logged, throttled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from server.batcher import BatchObserver
from server.core import Core
from server.extension import Extension
from server.modelcard import ModelCard
from server.monitoring.extension import Labelled
from server.monitoring.tasks import task_monitor
from server.predlog.format import rows_schema
from server.predlog.metrics import LogCounts, LoopCounts, PredictionLogCollector
from server.predlog.writer import (
    LABEL_BYTES,
    AnswerFn,
    LabelItem,
    LogWriter,
    RowsItem,
    Source,
)
from server.ratelimit import ThrottledLog
from server.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
"""How long ``stop`` waits for the writer to write what is queued."""


class SamplingObserver:
    """Queues a sample (share ``rate``) of each answered batch of one model version."""

    def __init__(
        self,
        source: Source,
        rate: float,
        writer: LogWriter,
        counts: LoopCounts,
        *,
        seed: int | None = None,
    ) -> None:
        self.source = source
        self.rate = rate
        self._writer = writer
        self._counts = counts
        self._rng = np.random.default_rng(seed)
        self._throttled = ThrottledLog(log)

    def observe(
        self, rows: np.ndarray, scores: np.ndarray, requests: Sequence[tuple[str, int, int]]
    ) -> None:
        rate = self.rate
        if rate <= 0:
            return
        try:
            picked: np.ndarray | None
            if rate >= 1:
                picked = None
                rows, scores = rows.copy(), scores.copy()
            else:
                picked = self._rng.random(len(rows)) < rate
                if not picked.any():
                    return
                rows, scores = rows[picked], scores[picked]
            item = RowsItem(self.source, time.time(), rows, scores, tuple(requests), picked)
            refused = self._writer.submit(item, rows.nbytes + scores.nbytes)
            if refused is not None:
                self._counts.dropped[(self.source.model, refused)] += len(rows)
        except Exception as exc:
            self._counts.errors["observe"] += 1
            self._throttled(
                logging.ERROR,
                "event=prediction_log_observe_failed model=%s version=%d error=%r",
                self.source.model,
                self.source.version,
                exc,
            )


class PredictionLogExtension(Extension):
    """A sampled, durable Parquet log of served rows and their labels (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue_max_bytes: int = 64 * 1024 * 1024,
        poll_s: float = 0.25,
        seed: int | None = None,
    ) -> None:
        """``queue_max_bytes``: rows and labels waiting for the writer (past it they are dropped
        and counted); ``poll_s``: how often the writer wakes; ``seed``: of the sampling."""
        if settings.prediction_log_dir is None:
            raise ValueError("the prediction log needs prediction_log_dir")
        self.directory = settings.prediction_log_dir
        self.default_rate = _rate(settings.prediction_log_rate, "prediction_log_rate")
        self.rates = {
            name: _rate(rate, f"prediction_log_rates[{name!r}]")
            for name, rate in settings.prediction_log_rates.items()
        }
        self.counts = LogCounts()
        self.writer = LogWriter(
            self.directory,
            self.counts.writer,
            file_rows=settings.prediction_log_file_rows,
            file_s=settings.prediction_log_file_s,
            max_bytes=settings.prediction_log_max_bytes,
            queue_max_bytes=queue_max_bytes,
            poll_s=poll_s,
        )
        self._seed = seed
        self._core: Core | None = None
        self._collector: PredictionLogCollector | None = None
        self._throttled = ThrottledLog(log)

    def rate_for(self, model: str) -> float:
        """The share of ``model``'s served rows that is logged."""
        return self.rates.get(model, self.default_rate)

    async def start(self, core: Core) -> None:
        self._core = core
        self._collector = PredictionLogCollector(self.counts)
        core.metrics.registry.register(self._collector)
        self.writer.start()
        log.info(
            "event=prediction_log_started directory=%s rate=%g rates=%s",
            self.directory,
            self.default_rate,
            self.rates,
        )

    async def stop(self) -> None:
        finished = await asyncio.to_thread(self.writer.stop, STOP_TIMEOUT_S)
        if not finished:
            log.error(
                "event=prediction_log_stop_timeout directory=%s timeout_s=%g (rows still "
                "queued or being written may be lost)",
                self.directory,
                STOP_TIMEOUT_S,
            )
        if self._core is not None and self._collector is not None:
            self._core.metrics.registry.unregister(self._collector)
        self._collector = None
        self._core = None

    def observer_for(self, card: ModelCard, *, variant: str | None = None) -> BatchObserver | None:
        if variant is not None:
            return None
        rate = self.rate_for(card.name)
        if rate <= 0:
            return None
        source = Source(
            card.name, card.version, rows_schema(card.input.feature_names), answers_of(card)
        )
        return SamplingObserver(source, rate, self.writer, self.counts.loop, seed=self._seed)

    def label(
        self,
        card: ModelCard,
        *,
        request_id: str | None,
        row: int | None,
        row_hash: str | None,
        target: float,
    ) -> None:
        """Queue a label of a row ``card``'s version answered (``target``: a classifier's class
        index as a float, a regressor's value), found by request id and row, or by row hash.
        Cheap (no I/O) and never raises: a failure, or a full queue, is counted."""
        try:
            item = LabelItem(
                card.name,
                card.version,
                time.time(),
                None if request_id is None else str(request_id),
                None if row is None else int(row),
                None if row_hash is None else str(row_hash),
                float(target),
            )
            refused = self.writer.submit(item, LABEL_BYTES)
            if refused is not None:
                self.counts.loop.dropped[(card.name, refused)] += 1
        except Exception as exc:
            self.counts.loop.errors["label"] += 1
            self._throttled(
                logging.ERROR, "event=prediction_log_label_failed model=%s error=%r", card.name, exc
            )

    def labelled(self, event: Labelled) -> None:
        """A monitoring label listener: log the label a served row took (a classifier's class
        index, a regressor's target)."""
        card = event.monitor.card
        truth = event.result.truth
        if card.task == "binary":  # the monitor keeps 1 for the positive class
            truth = float(card.positive_index if truth else 1 - card.positive_index)
        by_id = event.request_id is not None
        self.label(
            card,
            request_id=event.request_id,
            row=event.row if by_id else None,
            row_hash=None if by_id else event.row_hash,
            target=truth,
        )


def answers_of(card: ModelCard) -> AnswerFn:
    """The answer the monitor keeps for each row (:mod:`server.monitoring.tasks`)."""
    return task_monitor(card, 1).answers


def _rate(value: float, name: str) -> float:
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value
