"""The soak script end to end, in miniature: a real server, 15 seconds, its CSV and summary.

No memory threshold here (RSS over 15 seconds says nothing); ``python -m loadtests.stress.soak``
runs the real 30-minute soak.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import psutil
import pytest

from loadtests.stress.soak import main


@pytest.mark.e2e
def test_a_short_soak_writes_its_samples_and_summary(
    model_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = tmp_path / "soak.csv"
    code = main(
        [
            "--minutes",
            "0.25",
            "--rate",
            "40",
            "--connections",
            "2",
            "--sample-s",
            "2",
            "--feedback-rate",
            "4",
            "--models-dir",
            str(model_repo),
            "--large-model",
            "xgb_small",
            "--small-model",
            "logreg",
            "--csv",
            str(out),
            # cache xgb_small whatever its start-up cost measurement says: memo and memory tier
            "--env",
            "TABSERVE_CACHE_MODEL_TTL_S=" + json.dumps({"xgb_small": 60}),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    # the server it started is gone
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before
    with out.open() as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= 5
    last = samples[-1]
    assert float(last["t_s"]) >= 15.0 and float(last["rss_mb"]) > 0
    assert int(last["ok"]) > 100 and last["failed"] == "0"
    assert int(last["xgb_small.cache.enabled"]) == 1
    assert int(last["memory.entries"]) > 0 and int(last["xgb_small.memo.seen_hashes"]) > 0
    assert int(last["xgb_small.window.rows"]) > 0
    assert int(last["logreg.feedback.rows"]) > 0
    assert int(last["xgb_small.cache.rows_hit"]) == 0  # rows never repeat
    assert int(last["metrics.series"]) > 0
    assert "soak summary" in printed and "RSS minute 10" in printed
    assert "end / minute 10: - (the soak was shorter than 10 minutes)" in printed
    for structure in ("cache memory tier: entries", "xgb_small memo: doorkeeper hashes"):
        assert structure in printed
    assert "logreg feedback: request ids" in printed and "OVER" not in printed
