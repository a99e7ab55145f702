"""The report renders from fixed results: the recommendation, tables, the frontier, the plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from loadtests.budget import parse_budget
from loadtests.cli import main
from loadtests.labels import cell_label
from loadtests.plots import PLOTS, draw_plots, log_ticks
from loadtests.report import recommendation_summary, render

INTERNAL_ID = re.compile(r"\bb\d\b|-b\d|coff|cmemory|credis|\bnob\b|q256|-u\d+|SteadyOneRow")


def _render(tmp_path: Path, doc: dict[str, Any]) -> str:
    (tmp_path / "results.json").write_text(json.dumps(doc))
    return render(tmp_path).read_text()


def _saturate_locust(doc: dict[str, Any], pct: float = 97.0) -> None:
    """Locust at its one-core ceiling in the 16-user one-row cells, as in a real quick sweep."""
    for c in doc["cells"]:
        if c.get("group") == "models" and c.get("users") == 16:
            c["cpu"]["locust_pct"] = pct


def test_report_renders(tmp_path: Path, results_doc: dict[str, Any]) -> None:
    results_doc["meta"]["budget"] = "p99<=5ms@500rps"
    text = _render(tmp_path, results_doc)
    for plot in PLOTS:
        assert (tmp_path / plot).stat().st_size > 5_000, plot
        assert f"]({plot})" in text
    assert "**fraud, 16 users**: `fast_ok`" in text and "`slow_good`" in text
    assert "0.6100 / 0.0000" not in text  # offline values come from the cells' offline dicts
    assert "0.6100 / 0.6000" in text  # PR-AUC under load / offline for slow_good
    assert "FAILED: RuntimeError: boom" in text
    assert "| `slow_good` | ZipfRepeated |" in text and "80.0%" in text
    assert "Noisy run" not in text  # the fixture's cells record no competing load
    assert "Load generator limit" not in text  # nor a saturated Locust


def test_report_recommends_the_most_accurate_model_within_the_budget(
    tmp_path: Path, results_doc: dict[str, Any]
) -> None:
    # No budget recorded with the run: the report answers the default, p99<=5ms@500rps.
    text = _render(tmp_path, results_doc)
    lines = text.splitlines()
    assert lines[2] == "## Which model to deploy for p99 <= 5 ms at 500 req/s"
    fraud = next(line for line in lines if line.startswith("**Deploy `fast_ok`** (fraud)"))
    # why: the most accurate that fits (PR-AUC under load), with the measured latency and rate
    assert "Only it, of the 3 fraud models measured, meets p99 <= 5 ms at 500 req/s" in fraud
    assert "PR-AUC 0.410 under load on 1,000 hold-out rows" in fraud
    assert "answered 498 req/s with p99 1.50 ms, 3.50 ms inside the 5 ms limit" in fraud
    # the more accurate model it passed over, and why
    assert "More accurate but over budget: `slow_good` (PR-AUC 0.610, 470 req/s" in fraud
    assert any(line.startswith("**Deploy `cancer`** (cancer)") for line in lines)
    assert "| fraud | PR-AUC | `fast_ok` (deploy) | 0.410 | yes | measured |" in text
    assert text.index("**Deploy `fast_ok`**") < text.index("## How this was measured")


def test_sweep_prints_the_recommendation(results_doc: dict[str, Any]) -> None:
    lines = recommendation_summary(results_doc, parse_budget("p99<=5ms@500rps"))
    assert lines == [
        "cancer: deploy cancer, the most accurate of the 1 model(s) that meet p99 <= 5 ms at "
        "500 req/s (PR-AUC 0.990 under load; p99 0.40 ms at 2100 req/s, inferred)",
        "fraud: deploy fast_ok, the most accurate of the 1 model(s) that meet p99 <= 5 ms at "
        "500 req/s (PR-AUC 0.410 under load; p99 1.50 ms at 498 req/s, measured)",
    ]


def test_report_answers_another_budget_from_closed_loop_cells(
    tmp_path: Path, results_doc: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results_doc))
    # Nothing was paced at 400 req/s; slow_good sustained 500 req/s at p99 2 ms in closed loop.
    assert main(["report", str(tmp_path), "--budget", "p99<=5ms@400rps"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    deploy = next(line for line in text.splitlines() if line.startswith("**Deploy `slow_good`**"))
    assert "PR-AUC 0.610" in deploy and "inferred" in deploy
    assert main(["report", str(tmp_path), "--budget", "p99<=0.1ms@5000rps"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "**No fraud model fits p99 <= 0.1 ms at 5000 req/s** (none of 3 measured)" in text
    assert "Closest: `fast_ok`" in text and "Deploy" not in text
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    capsys.readouterr()


def test_labels_are_human(tmp_path: Path, results_doc: dict[str, Any]) -> None:
    cells = {c["cell_id"]: c for c in results_doc["cells"]}
    cells["batching-slow_good-u32"]["batching"] = False
    assert cell_label(cells["models-fast_ok-u1"]) == "fast_ok: one row, 1 user"
    assert cell_label(cells["models-fast_ok-u16"]) == "fast_ok: one row, 16 users"
    assert cell_label(cells["budget-fast_ok-u10"]) == "fast_ok: paced at 500 req/s (10 users)"
    assert (
        cell_label(cells["batching-slow_good-u32"]) == "slow_good: one row, 32 users, no batching"
    )
    spike = {"group": "spike", "model": "m", "users": 16, "server_label": "b, queue 256"}
    assert cell_label(spike) == "m: ramp to 16 users, spike to 48, queue up to 256 rows"
    texts = draw_plots(results_doc, tmp_path, parse_budget("p99<=5ms@500rps"))
    latency = texts["latency.png"]
    assert "slow_good: one row, 32 users, no batching" in latency
    assert "MODEL COMPARISON (CLOSED LOOP)" in latency
    for name, shown in texts.items():
        internal = [t for t in shown if INTERNAL_ID.search(t)]
        assert not internal, (name, internal)
    # axes say what they measure and in which unit; the log axis is labelled at 1-2-5 steps
    assert "client-side latency (ms, log scale)" in latency
    assert {"0.5", "1", "2", "5", "10", "20"} <= set(latency)
    assert "throughput (requests/s, one row each)" in texts["throughput.png"]
    assert "PR-AUC under load (hold-out)" in texts["tradeoff.png"]


def test_log_ticks_cover_the_range_at_one_two_five() -> None:
    assert log_ticks(0.26, 87.2) == [0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert log_ticks(1.0, 5.0) == [1, 2, 5]
    assert log_ticks(3.0, 3.5) == [2, 5]


def test_locust_ceiling_is_marked_when_its_core_was_saturated(
    tmp_path: Path, results_doc: dict[str, Any]
) -> None:
    plain = draw_plots(results_doc, tmp_path, parse_budget("p99<=5ms@500rps"))
    assert "load generator's limit" not in plain["throughput.png"]
    _saturate_locust(results_doc)
    texts = draw_plots(results_doc, tmp_path, parse_budget("p99<=5ms@500rps"))
    assert "load generator's limit" in texts["throughput.png"]
    assert any(t.startswith("Ringed: Locust used >= 90%") for t in texts["throughput.png"])
    assert "fast_ok: one row, 16 users  [Locust limit]" in texts["latency.png"]
    text = _render(tmp_path, results_doc)
    assert "> **Load generator limit**: in 3 of 15 cells Locust used >= 90%" in text
    assert "below every such ceiling (lowest 1,000 req/s)" in text
    assert "| `fast_ok` | 16 | 6,000 |" in text and "97% (limit)" in text


def test_noisy_cells_are_marked(tmp_path: Path, results_doc: dict[str, Any]) -> None:
    cells = {c["cell_id"]: c for c in results_doc["cells"]}
    cells["models-dominated-u16"]["cpu"]["others_server_core_pct"] = 55.0
    cells["budget-fast_ok-u10"]["cpu"]["others_client_core_pct"] = 30.0
    cells["budget-slow_good-u10"]["cpu"]["others_server_core_pct"] = 25.0
    text = _render(tmp_path, results_doc)
    assert "**Noisy run**: in 3 of 16 cells" in text and "up to 55%" in text
    deploy = next(line for line in text.splitlines() if line.startswith("**Deploy `fast_ok`**"))
    assert "Caution: during that cell other processes took 30% of a pinned core" in deploy
    assert "a noisy cell: it may fit on a quiet machine" in deploy  # slow_good, over budget
    texts = draw_plots(results_doc, tmp_path, parse_budget("p99<=5ms@500rps"))
    assert "dominated: one row, 16 users  [noisy]" in texts["latency.png"]
    assert "dominated (noisy)" in texts["tradeoff.png"]
    assert any("Hatched ring: a noisy cell" in t for t in texts["throughput.png"])
    assert "fast_ok (deploy) (noisy)" in texts["tradeoff.png"]


def test_report_scores_regression_and_multiclass_models_by_their_own_metric(
    tmp_path: Path, mixed_doc: dict[str, Any]
) -> None:
    text = _render(tmp_path, mixed_doc)
    lines = text.splitlines()
    pricing = next(line for line in lines if line.startswith("**Deploy `pricing_xgb`**"))
    assert "MAE 4 under load on 750 hold-out rows" in pricing
    assert "(next: `pricing_sklearn`, 5.2)" in pricing
    returns = next(line for line in lines if line.startswith("**Deploy `returns_sklearn`**"))
    assert "macro-F1 0.610 under load" in returns
    assert "More accurate but over budget: `returns_xgb` (macro-F1 0.720" in returns
    assert "| shop-regression | MAE | `pricing_xgb` (deploy) | 4 | yes | inferred |" in text
    assert "| shop-multiclass | macro-F1 | `returns_sklearn` (deploy) | 0.610 | yes |" in text
    # each task's own table: under load / offline, with the baseline beside it
    assert "### Regressors" in text and "### Multiclass classifiers" in text
    assert "| `pricing_xgb` | 750 (75%) | 4.0000 / 4.0000 | 30.0000 | 5.2000 / 0.0000 |" in text
    assert "| `returns_xgb` | 600 (60%) | 0.7700 / 0.7000 | 0.4000 | 0.7200 / 0.7200 |" in text
    assert "### Binary classifiers" in text and "0.6100 / 0.6000" in text  # fraud unchanged
    # the frontier compares MAE downwards: the faster, less accurate sklearn model is on it too
    assert "- **shop-regression, 1 user**: `pricing_sklearn` (p99 0.60 ms, MAE 5.2), " in text
    assert "`pricing_xgb` (p99 1.20 ms, MAE 4)" in text
    summary = recommendation_summary(mixed_doc, parse_budget("p99<=5ms@500rps"))
    assert any(
        s.startswith("shop-regression: deploy pricing_xgb") and "(MAE 4 under" in s for s in summary
    )


def test_tradeoff_plot_names_each_task_metric(tmp_path: Path, mixed_doc: dict[str, Any]) -> None:
    texts = draw_plots(mixed_doc, tmp_path, parse_budget("p99<=5ms@500rps"))
    tradeoff = texts["tradeoff.png"]
    assert "PR-AUC under load (hold-out)" in tradeoff
    assert "macro-F1 under load (hold-out)" in tradeoff
    assert "MAE under load (hold-out; lower is better, axis reversed)" in tradeoff
    assert "pricing_xgb (deploy)" in tradeoff


def test_shifted_regression_shows_its_metric_and_categorical_drift(
    tmp_path: Path, mixed_doc: dict[str, Any]
) -> None:
    monitoring = {
        "status": "drift",
        "features": [{"name": "region", "kind": "categorical", "psi": 0.31, "unseen_rate": 0.05}],
        "top_drifting": [{"name": "region", "psi": 0.31, "status": "drift"}],
        "scores": {"of": "predicted_value", "psi": 0.12, "status": "watch"},
    }
    shifted = next(c for c in mixed_doc["cells"] if c["model"] == "pricing_xgb")
    mixed_doc["cells"].append(
        shifted
        | {
            "cell_id": "shifted-pricing_xgb",
            "group": "shifted",
            "scenario": "ShiftedTraffic",
            "dataset": "shop-regression shift=1",
            "accuracy": shifted["accuracy"] | {"mae": 6.5, "target_mean": 41.0},
            "offline": None,
            "monitoring": monitoring,
        }
    )
    text = _render(tmp_path, mixed_doc)
    row = next(line for line in text.splitlines() if line.startswith("| `pricing_xgb` | shop-"))
    assert "| MAE 6.5000 / 4.0000, RMSE 5.2000 / 0.0000 | mean target 41.000 |" in row
    assert "drift: region (PSI 0.31, unseen 5.0%); predictions PSI 0.12 (watch)" in row
