"""Monitoring: input drift, prediction drift and live quality per model version.

- :class:`ModelMonitor` (``monitor.py``): the batcher's ``BatchObserver``; ``observe`` queues
  each answered batch, and every 256 rows or before any read the queue is binned into a rolling
  window (``window.py``) in one vectorised pass; ``feedback`` matches late labels to served rows
  (``feedback.py``), ``snapshot`` computes everything at read time (``stats.py``).
- :func:`register_monitoring_metrics` (``prometheus.py``): gauges read from snapshots at scrape.
- ``MonitoringExtension`` (``extension.py``, import it from there): one monitor
  per served version as its batch observer, the collector on the app's registry, and the routes
  in ``routes.py`` (``GET /v1/models/{name}/monitoring``, ``POST /v1/models/{name}/feedback``).

Snapshot shape (``ModelMonitor.snapshot()``; every float is finite or None)::

    {
      "model": "fraud", "version": 1,
      "status": "ok",              # worst of features and score: insufficient_data|ok|watch|drift
      "status_since": "2026-11-26T08:40:00+00:00",
      "since": "2026-11-26T08:00:00+00:00",       # monitor start
      "window": {"rows": 5000, "seconds": 41.2, "max_rows": 5000, "max_seconds": 600.0,
                 "min_rows": 500},
      "thresholds": {"psi_watch": 0.1, "psi_drift": 0.25, "min_rows": 500,
                     "decision_threshold": 0.31},
      "features": [                                # in the model's feature order
        {"name": "amount", "psi": 0.004, "ks": 0.011, "ks_pvalue": 0.93,
         "missing_rate": 0.0, "status": "ok"}, ...],
      "top_drifting": [{"name": "amount", "psi": 0.004, "status": "ok"}, ...],  # PSI desc, top 5
      "scores": {"psi": 0.006, "status": "ok", "ks": 0.02, "positive_rate": 0.031,
                 "reference_positive_rate": 0.029, "base_rate": 0.025},
      "quality": {"labels": 812, "window": 5000, "labels_total": 812,
                  "true_positives": 14, "false_positives": 6, "false_negatives": 5,
                  "precision": 0.7, "recall": 0.74, "f1": 0.72, "brier": 0.018,
                  "mean_score": 0.027, "observed_positive_rate": 0.023, "threshold": 0.31,
                  "reference": {"precision": 0.68, "recall": 0.7, "f1": 0.69, "brier": 0.019}},
      "observed": {"rows_total": 120000, "batches_total": 9000, "rejected_batches": 0,
                   "feedback_skipped_batches": 0, "errors": 0,
                   "feedback_rows_remembered": 100000, "feedback_capacity": 100000,
                   "feedback_requests_indexed": 6250,   # ids findable by (request_id, row)
                   "feedback_hashes_indexed": 0}        # filled by the first row_hash lookup
    }
"""

from server.monitoring.feedback import row_hash
from server.monitoring.monitor import FeedbackResult, ModelMonitor, MonitorParams
from server.monitoring.prometheus import MonitoringCollector, register_monitoring_metrics
from server.monitoring.stats import Status, ks_binned, ks_pvalue, psi

__all__ = [
    "FeedbackResult",
    "ModelMonitor",
    "MonitorParams",
    "MonitoringCollector",
    "Status",
    "ks_binned",
    "ks_pvalue",
    "psi",
    "register_monitoring_metrics",
    "row_hash",
]
