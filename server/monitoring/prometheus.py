"""Prometheus exposure: a collector that reads monitor snapshots at scrape time.

No gauge is touched per batch; each scrape takes one snapshot per monitor (its cost is PSI over
the window's bin totals: a few hundred microseconds per model version). Register it on the app's
own registry::

    register_monitoring_metrics(registry, lambda: registry_of_models.monitors())

where the callable returns the monitors live at scrape time (so reloads need no re-registration).
A value that is undefined (no rows yet, no labels yet) is exported as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from server.monitoring.monitor import ModelMonitor
from server.monitoring.stats import STATUS_LEVEL

_MODEL = ["model", "version"]
_FEATURE = ["model", "version", "feature"]


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "feature_psi": GaugeMetricFamily(
            "tabserve_drift_feature_psi", "PSI of a feature over the drift window", labels=_FEATURE
        ),
        "feature_ks": GaugeMetricFamily(
            "tabserve_drift_feature_ks",
            "Binned KS distance of a feature (a lower bound of the raw-sample KS statistic)",
            labels=_FEATURE,
        ),
        "status": GaugeMetricFamily(
            "tabserve_drift_status",
            "Drift status: -1 insufficient data, 0 ok, 1 watch, 2 drift",
            labels=_MODEL,
        ),
        "window_rows": GaugeMetricFamily(
            "tabserve_drift_window_rows", "Rows in the drift window", labels=_MODEL
        ),
        "score_psi": GaugeMetricFamily(
            "tabserve_drift_score_psi",
            "PSI of the positive-class score against the training score histogram",
            labels=_MODEL,
        ),
        "positive_rate": GaugeMetricFamily(
            "tabserve_positive_rate",
            "Share of rows at or above the threshold: live window, or the training reference",
            labels=[*_MODEL, "source"],
        ),
        "quality": GaugeMetricFamily(
            "tabserve_live_quality",
            "Live quality over the labelled window (metric: precision, recall, f1, brier)",
            labels=[*_MODEL, "metric"],
        ),
        "labels": GaugeMetricFamily(
            "tabserve_live_labels", "Labels in the live quality window", labels=_MODEL
        ),
    }


class MonitoringCollector:
    """Exports every live monitor's snapshot as gauges (a ``prometheus_client`` Collector)."""

    def __init__(self, monitors: Callable[[], Iterable[ModelMonitor]]) -> None:
        self._monitors = monitors

    def describe(self) -> Iterator[Metric]:
        """The metric names, without taking any snapshot (used at registration)."""
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for monitor in self._monitors():
            _add(families, monitor.snapshot())
        yield from families.values()


def register_monitoring_metrics(
    registry: CollectorRegistry, monitors: Callable[[], Iterable[ModelMonitor]]
) -> MonitoringCollector:
    """Register a :class:`MonitoringCollector` on ``registry`` and return it (to unregister)."""
    collector = MonitoringCollector(monitors)
    registry.register(collector)
    return collector


def _add(families: dict[str, GaugeMetricFamily], snap: dict[str, Any]) -> None:
    model = [snap["model"], str(snap["version"])]
    for feature in snap["features"]:
        families["feature_psi"].add_metric([*model, feature["name"]], _value(feature["psi"]))
        families["feature_ks"].add_metric([*model, feature["name"]], _value(feature["ks"]))
    families["status"].add_metric(model, STATUS_LEVEL[snap["status"]])
    families["window_rows"].add_metric(model, snap["window"]["rows"])
    scores = snap["scores"]
    families["score_psi"].add_metric(model, _value(scores["psi"]))
    families["positive_rate"].add_metric([*model, "live"], _value(scores["positive_rate"]))
    families["positive_rate"].add_metric(
        [*model, "reference"], _value(scores["reference_positive_rate"])
    )
    quality = snap["quality"]
    for metric in ("precision", "recall", "f1", "brier"):
        families["quality"].add_metric([*model, metric], _value(quality[metric]))
    families["labels"].add_metric(model, quality["labels"])


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)
