"""``tabserve serve --workers 2``: every scrape of /metrics counts both workers' requests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.workershare import share_dir
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e


def requests_total(text: str, model: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tabserve_requests_total" and s.labels.get("model") == model
    )


def test_every_scrape_counts_the_requests_of_both_workers(model_repo: Path, tmp_path: Path) -> None:
    with np.load(model_repo / "xgb_small" / "1" / "holdout.npz") as data:
        rows = data["X"][:40].astype(np.float32)
    server = ServerProcess(model_repo, args=["--workers", "2"], log_path=tmp_path / "serve.log")
    with server:
        assert server.pid is not None
        shared = share_dir(server.pid)
        # A connection per request and per scrape: the kernel hands them to either worker.
        for row in rows:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                r = client.post("/v1/models/xgb_small/predict", json={"instances": [row.tolist()]})
                assert r.status_code == 200
        time.sleep(2.5)  # another worker's samples are at most one publish (1 s) old
        scrapes = []
        for _ in range(12):
            with httpx.Client(base_url=server.url, timeout=10) as client:
                scrapes.append(requests_total(client.get("/metrics").text, "xgb_small"))
        published = {
            path.stem: sum(
                value
                for family in json.loads(path.read_text())
                for name, labels, value in family["samples"]
                if name == "tabserve_requests_total" and labels.get("model") == "xgb_small"
            )
            for path in shared.glob("*.json")
        }
    assert len(published) == 2, published  # both workers publish
    assert sum(published.values()) == len(rows)
    assert scrapes == [len(rows)] * len(scrapes), (scrapes, published)
    assert not shared.exists()  # removed when the server exits
