"""A two-cell sweep end to end: server and Locust processes started, measured, and stopped."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from loadtests.results import read_results
from loadtests.sweep import Cell, ServerConfig, Sweep, SweepOptions


@pytest.mark.e2e
def test_two_cell_sweep(model_repo: Path, tmp_path: Path) -> None:
    options = SweepOptions(model_repo, tmp_path, server_cpus=None, client_cpus=None)
    cells = [
        Cell("models", "logreg", "SteadyOneRow", 2, 2.0),
        Cell("accuracy", "logreg", "BatchRows", 1, 2.0, ServerConfig(), batch_size="1200"),
    ]
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    lines: list[str] = []
    report = Sweep(options, cells, tmp_path / "run", progress=lines.append).run()
    # every process the sweep started is gone
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before
    assert report.is_file() and (tmp_path / "run" / "tradeoff.png").stat().st_size > 0
    assert any("[2/2]" in line for line in lines)
    records = read_results(tmp_path / "run")["cells"]
    assert [r.get("failed") for r in records] == [None, None]
    one_row, batch = records
    assert one_row["throughput_rps"] > 10 and one_row["error_rate"] == 0.0
    assert one_row["server"]["mean_batch_rows"] >= 1.0
    assert one_row["cpu"]["server_s"] > 0
    # Locust's own count is final (not its once-a-second CSV) and agrees with ours.
    assert one_row["locust"]["requests"] == one_row["requests"] > 0
    assert batch["coverage"] == 1.0
    assert batch["accuracy"]["pr_auc"] == pytest.approx(batch["offline"]["pr_auc"], abs=1e-4)


@pytest.mark.e2e
def test_sweep_reports_a_regressor_with_string_columns(typed_repo: Path, tmp_path: Path) -> None:
    options = SweepOptions(typed_repo, tmp_path, server_cpus=None, client_cpus=None)
    model = "shop_regression"
    cells = [
        Cell("models", model, "SteadyOneRow", 2, 2.0),
        Cell("accuracy", model, "BatchRows", 1, 2.0, ServerConfig(), batch_size="1200"),
    ]
    report = Sweep(options, cells, tmp_path / "run", progress=lambda _: None).run()
    records = read_results(tmp_path / "run")["cells"]
    assert [r.get("failed") for r in records] == [None, None]
    one_row, batch = records
    assert one_row["task"] == "regression" and one_row["row_form"] == "objects"
    assert one_row["error_rate"] == 0.0
    assert batch["coverage"] == 1.0
    assert batch["accuracy"]["mae"] == pytest.approx(batch["offline"]["mae"], rel=1e-4)
    text = report.read_text()
    # judged by its own metric whether or not this busy machine met the latency budget
    assert f"| shop-regression | MAE | `{model}`" in text and "### Regressors" in text
    verdict = next(line for line in text.splitlines() if line.startswith("**"))
    assert "MAE " in verdict and "PR-AUC" not in verdict
