"""The open-loop overload scenario end to end: a real server and Locust, refuse only and degrade.

Bounded (two cells of two seconds each at a modest rate); it checks that the records carry the
overload fields, not how fast anything was (speed belongs to the sweep's report).
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from export.build import BuildSettings, build_model
from export.data import fraud_dataset
from export.recipes import RECIPES
from loadtests.holdout import read_card
from loadtests.results import read_results
from loadtests.sweep import Cell, ServerConfig, Sweep, SweepOptions, ladder_modes, plan
from tests.support.model_repo import TEST_ROWS

MODEL = "xgb_small"
RATE = 150.0
"""Requests/s: far below any server's capacity, so every request should be answered."""


@pytest.fixture(scope="module")
def ladder_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``xgb_small`` with its ladder, built by the real export pipeline (a few seconds)."""
    dest = tmp_path_factory.mktemp("overload-models")
    settings = BuildSettings(
        models_dir=dest, seed=0, n_jobs=1, cv_folds=3, cost_budget_s=0.05, ladder=True
    )
    build_model(RECIPES[MODEL], fraud_dataset(TEST_ROWS, seed=0), settings)
    return dest


def test_quick_plan_adds_the_overload_comparison_for_a_model_with_a_ladder(
    ladder_repo: Path,
) -> None:
    modes, skipped = ladder_modes(ladder_repo, MODEL)
    assert modes[:2] == ["refuse", "degrade"] and set(modes) | set(skipped) == {
        "refuse",
        "degrade",
        "cascade",
    }
    cells = plan(SweepOptions(ladder_repo, Path("unused")), [MODEL])
    overload = [c for c in cells if c.group == "overload"]
    assert len(overload) == 4 * len(modes)
    assert {c.server.overload_mode for c in overload} == set(modes)
    # the capacity cell comes first, and no overload cell uses the cache
    capacity = next(i for i, c in enumerate(cells) if c.group == "capacity")
    assert all(i > capacity for i, c in enumerate(cells) if c.group == "overload")
    assert all(c.server.cache == "off" for c in overload)


def _cell(mode: str) -> Cell:
    server = ServerConfig.for_overload(mode, MODEL, 50.0)
    return Cell("overload", MODEL, "OpenLoop", 2, 2.0, server, open_rate=RATE)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["refuse", "degrade"])
def test_open_loop_cell_records_the_overload_fields(
    ladder_repo: Path, tmp_path: Path, mode: str
) -> None:
    if mode == "degrade" and not read_card(ladder_repo, MODEL).variants:
        pytest.skip(f"{MODEL} was built without variants: no ladder to degrade to")
    options = SweepOptions(ladder_repo, tmp_path, server_cpus=None, client_cpus=None)
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    Sweep(options, [_cell(mode)], tmp_path / "run", progress=lambda _: None).run()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= children_before

    (record,) = read_results(tmp_path / "run")["cells"]
    assert record.get("failed") is None, record.get("failed")
    assert record["overload_mode"] == mode and record["target_rps"] == RATE
    ov = record["overload"]
    for key in (
        "offered_rps",
        "answered_rps",
        "answered_in_budget_share",
        "effective_recall",
        "rate_503",
        "rate_504",
        "lag_ms",
        "latency_ok_ms",
        "variants",
    ):
        assert key in ov, key
    assert ov["requests"] > 0 and ov["answered"] > 0 and ov["budget_ms"] == 50.0
    assert 0.0 <= ov["answered_in_budget_share"] <= 1.0
    assert ov["accuracy"]["rows"] == ov["answered_rows"] > 0
    assert 0.0 <= ov["accuracy"]["pr_auc"] <= 1.0
    assert record["cpu"]["server_s"] > 0
    assert "variant_rows" in record["server"] and "cascade_rows" in record["server"]
    # every 200 answer is counted under the variant its X-Model-Variant header named
    assert sum(ov["variants"].values()) == ov["answered"]
    report = (tmp_path / "run" / "REPORT.md").read_text()
    assert "## Overload: refuse, degrade, cascade" in report
    assert (tmp_path / "run" / "overload.png").stat().st_size > 0
