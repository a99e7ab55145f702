"""Monitoring: input drift, prediction drift and live quality per model version.

- :class:`ModelMonitor` (``monitor.py``): the batcher's ``BatchObserver``; ``observe`` queues
  each answered batch, and every 256 rows or before any read the queue is binned into a rolling
  window (``window.py``) in one vectorised pass; ``feedback`` matches late labels to served rows
  (``feedback.py``), ``snapshot`` computes everything at read time (``stats.py``). What differs
  per task (binary, multiclass, regression) is in ``tasks.py``: which answer is watched, which
  labels are taken, and the live quality computed from them (``quality.py``).
- :func:`register_monitoring_metrics` (``prometheus.py``): gauges read from snapshots at scrape.
- ``MonitoringExtension`` (``extension.py``, import it from there): one monitor
  per served version as its batch observer, the collector on the app's registry, and the routes
  in ``routes.py`` (``GET /v1/models/{name}/monitoring``, ``POST /v1/models/{name}/feedback``).
- With ``tabserve serve --workers N``, ``shared.py``: each worker publishes its monitors' states
  (bin totals, quality statistics, counters) every second, a snapshot sums them over the
  workers, and a label whose row another worker served is forwarded to it (one view; see
  ``shared.py`` for what stays per worker).

Snapshot shape (``ModelMonitor.snapshot()``; every float is finite or None), binary::

    {
      "model": "fraud", "version": 1, "task": "binary",
      "status": "ok",              # worst of features and score: insufficient_data|ok|watch|drift
      "status_since": "2026-11-26T08:40:00+00:00",
      "since": "2026-11-26T08:00:00+00:00",       # monitor start
      "window": {"rows": 5000, "seconds": 41.2, "max_rows": 5000, "max_seconds": 600.0,
                 "min_rows": 500},
      "thresholds": {"psi_watch": 0.1, "psi_drift": 0.25, "min_rows": 500,
                     "decision_threshold": 0.31},
      "features": [                                # in the model's feature order
        {"name": "amount", "kind": "numeric", "psi": 0.004, "ks": 0.011, "ks_pvalue": 0.93,
         "missing_rate": 0.0, "status": "ok"}, ...],
      "top_drifting": [{"name": "amount", "psi": 0.004, "status": "ok"}, ...],  # PSI desc, top 5
      "scores": {"of": "positive_score", "psi": 0.006, "status": "ok", "ks": 0.02,
                 "positive_rate": 0.031, "reference_positive_rate": 0.029, "base_rate": 0.025},
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

With several workers the snapshot describes all of them: ``window.rows``, the bin counts behind
every PSI and KS, the quality counts and ``observed`` are sums over the workers (``max_rows``,
the quality ``window`` and ``feedback_capacity`` too: each worker keeps its own), ``since`` is
the earliest worker's start, and a ``workers`` list says what each contributed::

    "workers": [{"worker": "4121", "rows": 2630, "labels": 410, "state_age_s": 0.0},
                {"worker": "4122", "rows": 2370, "labels": 402, "state_age_s": 0.41}],
    "observed": {..., "labels_from_other_workers": 396}   # labels forwarded here by others

A categorical feature (PSI over the shares of its categories plus an ``unseen`` share, see
``monitor._feature_bins``; it has no KS)::

    {"name": "region", "kind": "categorical", "psi": 0.31, "ks": null, "ks_pvalue": null,
     "missing_rate": 0.0, "unseen_rate": 0.05, "reference_unseen_rate": 0.0,
     "largest_shifts": [{"category": "west", "live_share": 0.4, "reference_share": 0.1}, ...],
     "status": "drift"}

Multiclass (``"decision_threshold": null``)::

    "scores": {"of": "predicted_class", "psi": 0.02, "status": "ok",
               "classes": ["bargain", "premium", "regular"],
               "predicted_shares": [0.31, 0.2, 0.49], "reference_predicted_shares": [...],
               "class_shares": [...]},                 # the training labels' shares
    "quality": {"labels": 40, "window": 5000, "labels_total": 40, "accuracy": 0.9,
                "macro_f1": 0.88, "weighted_f1": 0.9, "observed_class_shares": [...],
                "predicted_class_shares": [...], "per_class": [{"class": "bargain",
                "support": 12, "predicted": 13, "precision": 0.85, "recall": 0.92, "f1": 0.88},
                ...], "reference": {"accuracy": 0.91, "macro_f1": 0.9, "weighted_f1": 0.91}}

Regression::

    "scores": {"of": "predicted_value", "psi": 0.02, "status": "ok", "ks": 0.03,
               "ks_pvalue": 0.7, "bin_edges": [...], "target_mean": 48.2},
    "quality": {"labels": 40, "window": 5000, "labels_total": 40, "mae": 2.3, "rmse": 2.9,
                "mean_error": 0.1, "mean_prediction": 47.9, "mean_target": 47.8,
                "reference": {"mae": 2.4, "rmse": 3.0}}
"""

from server.monitoring.feedback import row_hash
from server.monitoring.monitor import FeedbackResult, ModelMonitor, MonitorParams, PeerState
from server.monitoring.prometheus import MonitoringCollector, register_monitoring_metrics
from server.monitoring.stats import Status, ks_binned, ks_pvalue, psi

__all__ = [
    "FeedbackResult",
    "ModelMonitor",
    "MonitorParams",
    "MonitoringCollector",
    "PeerState",
    "Status",
    "ks_binned",
    "ks_pvalue",
    "psi",
    "register_monitoring_metrics",
    "row_hash",
]
