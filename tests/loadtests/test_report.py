"""The report renders from fixed results: Markdown tables, the frontier, the budget, the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtests.cli import main
from loadtests.report import PLOTS, render


def test_report_renders(tmp_path: Path, results_doc: dict[str, Any]) -> None:
    results_doc["meta"]["budget"] = "p99<=5ms@500rps"
    (tmp_path / "results.json").write_text(json.dumps(results_doc))
    path = render(tmp_path)
    text = path.read_text()
    for plot in PLOTS:
        assert (tmp_path / plot).stat().st_size > 5_000, plot
        assert f"]({plot})" in text
    assert "## Which models fit `p99<=5ms@500rps`?" in text
    assert "**Fits: `cancer`, `fast_ok`**" in text
    assert "**fraud, 16 users**: `fast_ok`" in text and "`slow_good`" in text
    assert "0.6100 / 0.0000" not in text  # offline values come from the cells' offline dicts
    assert "0.6100 / 0.6000" in text  # PR-AUC under load / offline for slow_good
    assert "FAILED: RuntimeError: boom" in text
    assert "| `slow_good` | ZipfRepeated |" in text and "80.0%" in text
    assert "Noisy run" not in text  # the fixture's cells record no competing load


def test_report_warns_when_other_processes_competed(
    tmp_path: Path, results_doc: dict[str, Any]
) -> None:
    results_doc["cells"][0]["cpu"]["others_server_core_pct"] = 55.0
    (tmp_path / "results.json").write_text(json.dumps(results_doc))
    text = render(tmp_path).read_text()
    assert "**Noisy run**: in 1 of 16 cells" in text and "up to 55%" in text


def test_cli_report_rerenders_with_another_budget(
    tmp_path: Path, results_doc: dict[str, Any], capsys: Any
) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results_doc))
    assert main(["report", str(tmp_path), "--budget", "p99<=1ms@1000rps"]) == 0
    assert "p99<=1ms@1000rps" in (tmp_path / "REPORT.md").read_text()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    capsys.readouterr()
