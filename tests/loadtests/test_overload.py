"""The overload comparison's scoring, plan and report section (no processes started)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests.budget import parse_budget
from loadtests.cli import main
from loadtests.overload import (
    NO_ANSWER,
    OverloadLog,
    capacity_of,
    client_limited,
    read_answer,
    summarize_overload,
)
from loadtests.overload_report import OVERLOAD_PLOT
from loadtests.plots import draw_plots
from loadtests.report import render_markdown
from loadtests.sweep import Cell, ServerConfig, locust_command, overload_plan


def _log() -> OverloadLog:
    """Six one-row requests, three positives: two answered in time (one called positive), one
    late, one 503, one never answered, one negative answered in time by a variant."""
    log = OverloadLog()
    common = {"lag_ms": 0.5, "budget_ms": 50.0}
    log.record(latency_ms=10, status=200, labels=[1], answers=[(0.9, 1)], variant="full", **common)
    log.record(latency_ms=20, status=200, labels=[1], answers=[(0.4, 0)], variant="k12", **common)
    log.record(latency_ms=80, status=200, labels=[0], answers=[(0.7, 1)], variant="full", **common)
    log.record(latency_ms=1, status=503, labels=[0], **common)
    log.record(latency_ms=60, status=NO_ANSWER, labels=[1], **common)
    log.record(latency_ms=5, status=200, labels=[0], answers=[(0.1, 0)], variant="k12", **common)
    return log


def test_summary_counts_only_answers_in_time_toward_effective_recall() -> None:
    out = summarize_overload(_log(), budget_ms=50.0, duration_s=2.0, target_rps=4.0, threshold=0.5)
    assert out["requests"] == 6 and out["answered"] == 4 and out["answered_in_budget"] == 3
    assert out["answered_in_budget_share"] == pytest.approx(0.5)
    assert out["rate_503"] == pytest.approx(1 / 6) and out["rate_no_answer"] == pytest.approx(1 / 6)
    # one positive of three was answered in time and called positive
    assert out["positives"] == 3 and out["effective_recall"] == pytest.approx(1 / 3)
    acc = out["accuracy"]
    assert acc["rows"] == 4 and acc["positives"] == 2
    # decisions as served: TP 1, FP 1 (the late one), FN 1 -> F1 0.5; at 0.5 on the scores too
    assert acc["f1"] == pytest.approx(0.5) and acc["f1_at_full_threshold"] == pytest.approx(0.5)
    assert acc["pr_auc"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert out["variants"] == {"full": 2, "k12": 2}
    assert out["variants_in_time"] == {"full": 1, "k12": 2}
    assert out["offered_share_of_target"] == pytest.approx(6 / 2.0 / 4.0)
    json.dumps(out)  # JSON-ready


def test_summary_of_multi_row_requests_counts_requests_and_scores_rows() -> None:
    """Shares are per request; accuracy and effective recall per row: a late request's
    positives are missed, and a request without a usable answer scores none of its rows."""
    log = OverloadLog()
    common = {"lag_ms": 0.5, "budget_ms": 50.0}
    log.record(
        latency_ms=10,
        status=200,
        labels=[1, 0, 1],
        answers=[(0.9, 1), (0.2, 0), (0.3, 0)],
        **common,
    )
    log.record(latency_ms=90, status=200, labels=[1, 0], answers=[(0.8, 1), (0.6, 1)], **common)
    log.record(latency_ms=5, status=504, labels=[1, 1, 0], **common)
    out = summarize_overload(log, budget_ms=50.0, duration_s=1.0, target_rps=None, threshold=0.5)
    assert (
        out["requests"] == 3
        and out["rows"] == 8
        and out["rows_per_request"] == pytest.approx(8 / 3)
    )
    assert out["answered"] == 2 and out["answered_rows"] == 5
    assert out["answered_in_budget_share"] == pytest.approx(1 / 3)
    assert out["rate_504"] == pytest.approx(1 / 3)
    # 5 positives: one answered in time and called positive (the late request's does not count)
    assert out["positives"] == 5 and out["effective_recall"] == pytest.approx(1 / 5)
    assert out["accuracy"]["rows"] == 5 and out["accuracy"]["positives"] == 3


def test_read_answer_uses_the_answers_label() -> None:
    body = b'{"classes":[0,1],"predictions":[{"label":1,"scores":[0.7,0.3]}]}'
    assert read_answer(body, 1, 1, 0.5, 1) == [(pytest.approx(0.3), 1)]
    no_label = b'{"predictions":[{"scores":[0.2,0.8]},{"scores":[0.9,0.1]}]}'
    assert read_answer(no_label, 1, 1, 0.5, 2) == [(pytest.approx(0.8), 1), (pytest.approx(0.1), 0)]
    with pytest.raises(ValueError, match="unusable"):
        read_answer(b'{"predictions":[]}', 1, 1, 0.5, 1)
    with pytest.raises(ValueError, match="1 predictions for 2 rows"):
        read_answer(body, 1, 1, 0.5, 2)


def test_capacity_is_measured_when_the_server_core_was_busy() -> None:
    busy = {"ok": 4000, "duration_measured_s": 2.0, "cpu": {"server_pct": 95.0}}
    assert capacity_of(busy) == (2000.0, "measured")
    idle = {"ok": 2000, "duration_measured_s": 2.0, "cpu": {"server_pct": 50.0}}
    rate, how = capacity_of(idle)
    assert rate == pytest.approx(2000.0) and how.startswith("estimated")
    assert capacity_of({"failed": "boom"})[0] is None


def test_client_limit_is_flagged() -> None:
    cell = {"overload": {"offered_share_of_target": 0.5, "lag_ms": {"p99": 12.0}}, "cpu": {}}
    reasons = client_limited(cell)
    assert len(reasons) == 2 and "50%" in reasons[0]
    assert client_limited({"overload": {"offered_share_of_target": 1.0}, "cpu": {}}) == []


def test_overload_plan_and_server_settings(tmp_path: Path) -> None:
    cells = overload_plan("xgb_large", ["refuse", "degrade", "cascade"], 5.0)
    assert [c.group for c in cells] == ["capacity"] + ["overload"] * 12
    assert cells[0].server == ServerConfig() and cells[0].server.cache == "off"
    overload = cells[1:]
    assert [c.load_factor for c in overload[:4]] == [0.5, 1.0, 2.0, 3.0]
    assert len({c.cell_id for c in cells}) == len(cells)
    env = {c.server.overload_mode: c.server.env() for c in overload}
    assert "TABSERVE_DEGRADE_OBJECTIVE_MS" not in env["refuse"]
    assert json.loads(env["degrade"]["TABSERVE_DEGRADE_OBJECTIVE_MS"]) == {"xgb_large": 50.0}
    assert json.loads(env["cascade"]["TABSERVE_CASCADE_MODELS"]) == ["xgb_large"]
    assert all(e["TABSERVE_CACHE"] == "false" for e in env.values())
    with pytest.raises(ValueError):
        ServerConfig.for_overload("shed", "m", 50.0)
    paced = Cell("overload", "m", "OpenLoop", 4, 3.0, open_rate=1234.5, budget_ms=40.0)
    cmd = " ".join(locust_command(paced, "http://127.0.0.1:1", tmp_path, tmp_path, None))
    assert "--open-rate 1234.5 --budget-ms 40" in cmd and paced.target_rps == 1234.5


def _overload_cell(mode: str, factor: float, share: float, recall: float) -> dict[str, Any]:
    return {
        "cell_id": f"overload-{mode}-{factor}",
        "group": "overload",
        "model": "xgb_large",
        "scenario": "OpenLoop",
        "users": 4,
        "overload_mode": mode,
        "load_factor": factor,
        "target_rps": 1000.0 * factor,
        "budget_ms": 50.0,
        "cpu": {"server_s": 2.0, "locust_pct": 40.0},
        "server": {"cascade_rows": {"variant": 800.0, "full": 200.0}} if mode == "cascade" else {},
        "overload": {
            "offered_rps": 1000.0 * factor,
            "target_rps": 1000.0 * factor,
            "offered_share_of_target": 1.0,
            "answered_rps": 900.0,
            "answered": 4000,
            "answered_in_budget_share": share,
            "rate_503": 1 - share,
            "rate_504": 0.0,
            "rate_no_answer": 0.0,
            "latency_ok_ms": {"p99": 30.0},
            "lag_ms": {"p99": 0.4},
            "effective_recall": recall,
            "variants": {"full": 3000, "k62": 1000} if mode == "degrade" else {"full": 4000},
            "accuracy": {"pr_auc": 0.6, "f1": 0.55, "recall": 0.5},
        },
    }


def test_report_section_and_plot(tmp_path: Path, results_doc: dict[str, Any]) -> None:
    for mode, recalls in (("refuse", (0.5, 0.5, 0.3, 0.2)), ("degrade", (0.5, 0.5, 0.49, 0.48))):
        for factor, recall in zip((0.5, 1.0, 2.0, 3.0), recalls, strict=True):
            share = 1.0 if mode == "degrade" or factor <= 1 else recall / 0.5
            results_doc["cells"].append(_overload_cell(mode, factor, share, recall))
    results_doc["cells"].append(
        {"cell_id": "capacity-x", "group": "capacity", "model": "xgb_large", "users": 64,
         "capacity_rps": 1000.0, "capacity_how": "measured", "latency_ms": {"p99": 40.0}}
    )  # fmt: skip
    budget = parse_budget("p99<=5ms@500rps")
    texts = draw_plots(results_doc, tmp_path, budget)
    assert (tmp_path / OVERLOAD_PLOT).stat().st_size > 5_000
    shown = " ".join(texts[OVERLOAD_PLOT])
    assert "refuse only" in shown and "degrade" in shown and "3x" in shown
    text = render_markdown(results_doc, budget)
    section = text.split("## Overload: refuse, degrade, cascade", 1)[1]
    assert f"]({OVERLOAD_PLOT})" in section and "1,000 req/s (measured" in section
    assert "| degrade | 3.0x |" in section and "full 75%, k62 25%" in section
    assert "cascade: not measured" in section
    # the targets, checked: 100% in budget and a recall gap of 0.02 at 3x
    assert "**Degrade at 3x capacity**: 100.0% answered" in section and "gap of 0.020" in section
    assert section.count("met") >= 2 and "missed" not in section.split("Refuse only at")[0]


def test_cli_runs_the_overload_groups_alone(
    model_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--dry-run", "--models-dir", str(model_repo), "--groups", "capacity,overload"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # the test models have no ladder: the capacity cell and refuse only at 4 loads
    assert "-BatchRows-b0-coff-u64]" in out and "[capacity-" in out
    assert "-OpenLoop-b0-coff-x3-u4]" in out and "degrade" not in out
    assert "5 cells" in out and "models-" not in out
    assert main(["sweep", "--dry-run", "--models-dir", str(model_repo), "--groups", "nope"]) == 2
    assert "unknown groups ['nope']" in capsys.readouterr().err
