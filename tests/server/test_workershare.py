"""``server.workershare``: the workers' metrics merged into one exposition.

Two real ``ServerMetrics`` registries stand for two workers sharing a directory; the end-to-end
test (``tests/e2e/test_workers_metrics.py``) runs ``tabserve serve --workers 2``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ServerMetrics
from server.workershare import WorkerShare


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def two_workers(tmp_path: Path) -> tuple[ServerMetrics, WorkerShare, ServerMetrics, WorkerShare]:
    a, b = ServerMetrics(), ServerMetrics()
    return a, WorkerShare(tmp_path, pid=101), b, WorkerShare(tmp_path, pid=102)


def test_counters_and_histograms_are_summed_over_workers(tmp_path: Path) -> None:
    a, share_a, b, share_b = two_workers(tmp_path)
    a.requests.labels("m", "1").inc(3)
    b.requests.labels("m", "1").inc(4)
    b.requests.labels("other", "2").inc(1)
    a.request_latency.labels("m", "200").observe(0.002)
    b.request_latency.labels("m", "200").observe(0.002)
    b.request_latency.labels("m", "200").observe(0.3)
    b.rejected.labels("m", "1").inc()
    share_b.publish(b.registry)

    merged = samples(share_a.render(a.registry))
    assert merged[("tabserve_requests_total", (("model", "m"), ("version", "1")))] == 7
    assert merged[("tabserve_requests_total", (("model", "other"), ("version", "2")))] == 1
    count = ("tabserve_request_duration_seconds_count", (("model", "m"), ("status", "200")))
    assert merged[count] == 3
    labels = (("le", "0.0025"), ("model", "m"), ("status", "200"))
    le = ("tabserve_request_duration_seconds_bucket", labels)
    assert merged[le] == 2
    assert merged[("tabserve_rejected_requests_total", (("model", "m"), ("version", "1")))] == 1


def test_queue_rows_are_summed_other_gauges_take_the_largest(tmp_path: Path) -> None:
    a, share_a, b, share_b = two_workers(tmp_path)
    a.queue_depth.labels("m", "1").set(5)
    b.queue_depth.labels("m", "1").set(7)
    a.models_loaded.set(2)
    b.models_loaded.set(2)
    share_b.publish(b.registry)
    merged = samples(share_a.render(a.registry))
    assert merged[("tabserve_queue_rows", (("model", "m"), ("version", "1")))] == 12
    assert merged[("tabserve_model_versions_loaded", ())] == 2


def test_a_stale_workers_gauges_are_dropped_but_its_counts_stay(tmp_path: Path) -> None:
    a, share_a, b, share_b = two_workers(tmp_path)
    b.requests.labels("m", "1").inc(4)
    b.queue_depth.labels("m", "1").set(7)
    share_b.publish(b.registry)
    old = time.time() - 60
    os.utime(share_b.path, (old, old))  # a worker that exited a minute ago
    merged = samples(share_a.render(a.registry))
    assert merged[("tabserve_requests_total", (("model", "m"), ("version", "1")))] == 4
    assert ("tabserve_queue_rows", (("model", "m"), ("version", "1"))) not in merged


def test_whichever_worker_answers_the_scrape_sees_the_same_totals(tmp_path: Path) -> None:
    a, share_a, b, share_b = two_workers(tmp_path)
    a.requests.labels("m", "1").inc(3)
    b.requests.labels("m", "1").inc(4)
    share_a.publish(a.registry)
    share_b.publish(b.registry)
    key = ("tabserve_requests_total", (("model", "m"), ("version", "1")))
    assert samples(share_a.render(a.registry))[key] == 7
    assert samples(share_b.render(b.registry))[key] == 7
