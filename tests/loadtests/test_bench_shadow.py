"""The bench's shadow suite: its repositories and ratios, and a bounded run on real servers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from loadtests.bench.cli import parser
from loadtests.bench.shadow import (
    CELLS,
    LARGE,
    OFF,
    SAME,
    ShadowCell,
    build_repos,
    run_shadow,
    shadow_ratios,
    verdicts,
)
from server.modelcard import load_card
from server.routing import read_routing


def test_ratios_compare_each_shadow_with_off() -> None:
    cells = [
        ShadowCell(OFF, 64, rps=10_000.0, cpu_us_per_request=100.0),
        ShadowCell(SAME, 64, rps=9_800.0, cpu_us_per_request=104.0),
        ShadowCell(LARGE, 64, rps=9_000.0, cpu_us_per_request=110.0),
        ShadowCell(SAME, 1, rps=3_000.0, cpu_us_per_request=200.0),  # no off at c=1: no ratio
    ]
    ratios = shadow_ratios(cells)
    assert ratios == {
        "c=64: shadow same/off server CPU per request (target <= 1.05)": 1.04,
        "c=64: shadow same/off req/s": 0.98,
        "c=64: shadow large/off server CPU per request (target <= 1.05)": 1.1,
        "c=64: shadow large/off req/s": 0.9,
    }
    assert verdicts({"ratios": ratios}) == [
        "c=64: shadow same/off: +4.0% server CPU per request (met)",
        "c=64: shadow large/off: +10.0% server CPU per request (MISSED)",
    ]


def test_repositories_route_version_2_as_the_shadow(model_repo: Path, tmp_path: Path) -> None:
    repos, skipped = build_repos(model_repo, tmp_path, "xgb_small", "logreg")
    assert skipped == {} and set(repos) == set(CELLS)
    assert sorted(p.name for p in (repos[OFF] / "xgb_small").iterdir()) == ["1"]
    assert read_routing(repos[OFF], "xgb_small").shadow is None
    for cell, estimator in ((SAME, "xgb_small"), (LARGE, "logreg")):
        routing = read_routing(repos[cell], "xgb_small")
        assert (routing.primary, routing.shadow) == (1, 2)
        shadow = load_card(repos[cell] / "xgb_small" / "2")
        original = json.loads((model_repo / estimator / "1" / "model.json").read_text())
        assert (shadow.name, shadow.version) == ("xgb_small", 2)
        assert shadow.estimator == original["estimator"]

    repos, skipped = build_repos(model_repo, tmp_path / "again", "xgb_small", "no_such_model")
    assert LARGE not in repos and "no_such_model" in skipped[LARGE]


def test_the_suite_is_an_option_of_bench() -> None:
    assert parser().parse_args(["--suite", "shadow"]).suite == "shadow"


@pytest.mark.e2e
def test_shadow_suite_measures_every_cell(model_repo: Path) -> None:
    """Bounded: c=1, a fraction of a second per cell, logreg as the costlier candidate."""
    args = argparse.Namespace(
        models_dir=str(model_repo),
        models="xgb_small,logreg",
        concurrency="1",
        seconds=0.3,
        repeat=1,
        env=["TABSERVE_SHADOW_CPU_SHARE=1"],  # a fraction of a second: score every row
    )
    report = run_shadow(args, None, None, "python")
    assert report["skipped"] == {}
    cells = {c["cell"]: c for c in report["cells"]}
    assert set(cells) == set(CELLS)
    for cell in cells.values():
        assert cell["errors"] == 0 and cell["requests"] > 0
        assert cell["cpu_us_per_request"] > 0
    assert cells[OFF]["rows_offered"] == 0
    for name in (SAME, LARGE):
        assert cells[name]["rows_scored"] > 0
        assert (
            cells[name]["rows_scored"] + cells[name]["rows_skipped"] <= cells[name]["rows_offered"]
        )
        assert f"c=1: {name}/off server CPU per request (target <= 1.05)" in report["ratios"]
        assert f"c=1: {name}/off req/s" in report["ratios"]
    assert report["answers_changed"] == {SAME: 0, LARGE: 0}
