"""Prometheus exposure: a collector that reads monitor snapshots at scrape time.

No gauge is touched per batch; each scrape takes one snapshot per monitor (its cost is PSI over
the window's bin totals: a few hundred microseconds per model version). Register it on the app's
own registry::

    register_monitoring_metrics(registry, lambda: registry_of_models.monitors())

where the callable returns the monitors live at scrape time (so reloads need no re-registration).
With ``--workers N`` the extension passes ``snapshot``: each monitor's snapshot over all workers
(``server.monitoring.shared``), so the gauges describe every worker's traffic; they are computed
by the worker that answers the scrape, never published (``server.workershare.PUBLISHING``).
A value that is undefined (no rows yet, no labels yet) is exported as NaN.

Per task: ``tabserve_drift_score_psi`` is the PSI of what the model answers (binary: the
positive-class score; multiclass: the predicted class; regression: the predicted value);
``tabserve_positive_rate`` is binary only, ``tabserve_predicted_class_share`` multiclass only;
``tabserve_live_quality`` has ``metric`` precision, recall, f1, brier (binary), accuracy,
macro_f1, weighted_f1 (multiclass) or mae, rmse (regression). Categorical features have
``tabserve_drift_feature_unseen_rate`` and no KS distance (their categories have no order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from server.monitoring.monitor import ModelMonitor
from server.monitoring.stats import STATUS_LEVEL
from server.workershare import PUBLISHING

_MODEL = ["model", "version"]
_FEATURE = ["model", "version", "feature"]
QUALITY_METRICS = {
    "binary": ("precision", "recall", "f1", "brier"),
    "multiclass": ("accuracy", "macro_f1", "weighted_f1"),
    "regression": ("mae", "rmse"),
}
"""The ``metric`` label values of ``tabserve_live_quality`` per task."""


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
        "feature_unseen": GaugeMetricFamily(
            "tabserve_drift_feature_unseen_rate",
            "Share of window rows whose category the model does not know (categorical features)",
            labels=_FEATURE,
        ),
        "score_psi": GaugeMetricFamily(
            "tabserve_drift_score_psi",
            "PSI of the answers against the training answers (binary: positive-class score, "
            "multiclass: predicted class, regression: predicted value)",
            labels=_MODEL,
        ),
        "class_share": GaugeMetricFamily(
            "tabserve_predicted_class_share",
            "Multiclass: share of rows predicted as a class (live window, or training reference)",
            labels=[*_MODEL, "class", "source"],
        ),
        "positive_rate": GaugeMetricFamily(
            "tabserve_positive_rate",
            "Share of rows at or above the threshold: live window, or the training reference",
            labels=[*_MODEL, "source"],
        ),
        "quality": GaugeMetricFamily(
            "tabserve_live_quality",
            "Live quality over the labelled window (metric: precision, recall, f1, brier; "
            "accuracy, macro_f1, weighted_f1; mae, rmse)",
            labels=[*_MODEL, "metric"],
        ),
        "labels": GaugeMetricFamily(
            "tabserve_live_labels", "Labels in the live quality window", labels=_MODEL
        ),
    }


class MonitoringCollector:
    """Exports every live monitor's snapshot as gauges (a ``prometheus_client`` Collector)."""

    def __init__(
        self,
        monitors: Callable[[], Iterable[ModelMonitor]],
        snapshot: Callable[[ModelMonitor], dict[str, Any]] | None = None,
    ) -> None:
        self._monitors = monitors
        self._snapshot = snapshot if snapshot is not None else ModelMonitor.snapshot

    def describe(self) -> Iterator[Metric]:
        """The metric names, without taking any snapshot (used at registration)."""
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        if PUBLISHING.get():  # for the other workers: they compute these for all workers
            return
        for monitor in self._monitors():
            _add(families, self._snapshot(monitor))
        yield from families.values()


def register_monitoring_metrics(
    registry: CollectorRegistry,
    monitors: Callable[[], Iterable[ModelMonitor]],
    snapshot: Callable[[ModelMonitor], dict[str, Any]] | None = None,
) -> MonitoringCollector:
    """Register a :class:`MonitoringCollector` on ``registry`` and return it (to unregister)."""
    collector = MonitoringCollector(monitors, snapshot)
    registry.register(collector)
    return collector


def _add(families: dict[str, GaugeMetricFamily], snap: dict[str, Any]) -> None:
    model = [snap["model"], str(snap["version"])]
    for feature in snap["features"]:
        labels = [*model, feature["name"]]
        families["feature_psi"].add_metric(labels, _value(feature["psi"]))
        if feature["kind"] == "categorical":
            families["feature_unseen"].add_metric(labels, _value(feature["unseen_rate"]))
        else:
            families["feature_ks"].add_metric(labels, _value(feature["ks"]))
    families["status"].add_metric(model, STATUS_LEVEL[snap["status"]])
    families["window_rows"].add_metric(model, snap["window"]["rows"])
    scores = snap["scores"]
    families["score_psi"].add_metric(model, _value(scores["psi"]))
    task = snap["task"]
    if task == "binary":
        families["positive_rate"].add_metric([*model, "live"], _value(scores["positive_rate"]))
        families["positive_rate"].add_metric(
            [*model, "reference"], _value(scores["reference_positive_rate"])
        )
    elif task == "multiclass":
        for source, key in (
            ("live", "predicted_shares"),
            ("reference", "reference_predicted_shares"),
        ):
            shares = scores[key] or [None] * len(scores["classes"])
            for label, share in zip(scores["classes"], shares, strict=True):
                families["class_share"].add_metric([*model, str(label), source], _value(share))
    quality = snap["quality"]
    for metric in QUALITY_METRICS[task]:
        families["quality"].add_metric([*model, metric], _value(quality[metric]))
    families["labels"].add_metric(model, quality["labels"])


def _value(value: float | None) -> float:
    return math.nan if value is None else float(value)
