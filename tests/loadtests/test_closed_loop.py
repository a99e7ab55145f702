"""The closed loop end to end on small data: a real server, the prediction log, a drift-triggered
``tabserve retrain`` run by the server, the candidate in shadow, automatic promotion, and the
report; nothing failed and nothing left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.closed_loop import LoopOptions, run_loop
from loadtests.loop_report import write_report
from server.routing import read_routing

pytestmark = pytest.mark.e2e


def test_drift_retrain_shadow_promote_on_small_data(model_repo: Path, tmp_path: Path) -> None:
    options = LoopOptions(
        models_dir=model_repo,
        out=tmp_path / "loop",
        before_rows=3_000,
        after_rows=3_000,
        min_labels=1_500,
        promote_after=1_200,
        concurrency=8,
        timeout_s=400,
        work=tmp_path / "work",
    )
    options.out.mkdir()
    results = run_loop(options, progress=lambda _: None)
    report = write_report(options.out, results)

    assert results["finished"], report
    assert results["failures"] == {}, report
    events = [e["event"] for e in results["timeline"]]
    # in causal order; the retrain writes the shadow routing before it exits, so a poll can see
    # the candidate in shadow before it sees the run finished
    assert events[:2] == ["drift flagged", "retrain triggered"], report
    assert sorted(events[2:4]) == ["candidate in shadow", "retrain finished"], report
    assert events[4:] == ["promoted"], report
    # the old model answered until the promotion, the retrained one after it
    assert results["versions"]["before"] == [1] and results["versions"]["shifted"] == [1]
    assert results["versions"]["after"] == [2]
    # the retrained model is better than the old one on the shifted rows nobody trained on
    assert results["pr_auc"]["after"] > results["pr_auc"]["shifted"], report
    actions = [(e["action"], e["by"]) for e in results["routing_events"]]
    assert actions == [("pin", "retrain"), ("shadow", "retrain"), ("promote", "auto")], report
    routing = read_routing(tmp_path / "work" / "models", "xgb_small")
    assert routing.primary == 2 and routing.previous == [1]
    assert any("published" in line or "version 2" in line for line in results["retrain_output"])
    assert (options.out / "REPORT.md").read_text() == report
    assert "promoted" in report and (options.out / "loop.png").is_file()
