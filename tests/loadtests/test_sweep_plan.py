"""The sweep's matrix, server settings and Locust command line (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.budget import parse_budget
from loadtests.cli import main
from loadtests.sweep import (
    LOCUSTFILE,
    SHAPESFILE,
    Cell,
    ServerConfig,
    SweepOptions,
    estimated_seconds,
    locust_command,
    plan,
)


def test_server_config_environment() -> None:
    assert ServerConfig().env()["TABSERVE_CACHE"] == "false"
    off = ServerConfig(batching=False, max_delay_ms=2.0, cache="redis", max_queue_rows=64).env()
    assert off["TABSERVE_BATCHING"] == "false" and off["TABSERVE_MAX_DELAY_MS"] == "2"
    assert off["TABSERVE_CACHE"] == "true" and off["TABSERVE_CACHE_MEMORY_ENTRIES"] == "0"
    assert off["TABSERVE_MAX_QUEUE_ROWS"] == "64"
    assert "TABSERVE_CACHE_MEMORY_ENTRIES" not in ServerConfig(cache="tiered").env()
    assert ServerConfig(cache="tiered").uses_redis and not ServerConfig(cache="memory").uses_redis
    with pytest.raises(ValueError):
        ServerConfig(cache="disk")


def test_quick_plan_covers_the_matrix(model_repo: Path) -> None:
    options = SweepOptions(model_repo, Path("unused"), budget=parse_budget("p99<=5ms@500rps"))
    cells = plan(options, ["logreg", "xgb_small"])
    groups = {c.group for c in cells}
    assert groups == {"models", "accuracy", "batching", "cache", "spike", "shifted", "budget"}
    models = [c for c in cells if c.group == "models"]
    assert {(c.model, c.users) for c in models} == {
        (m, u) for m in ("logreg", "xgb_small") for u in (1, 16)
    }
    assert {c.server.cache for c in cells if c.group == "cache"} == {"off", "memory", "redis"}
    assert all(c.fresh_server for c in cells if c.group == "cache")
    batching = {(c.server.batching, c.server.max_delay_ms) for c in cells if c.group == "batching"}
    assert batching == {(False, 0.0), (True, 0.0), (True, 2.0)}
    budget = [c for c in cells if c.group == "budget"]
    assert all(c.target_rps == pytest.approx(500.0) for c in budget) and len(budget) == 2
    assert len({c.cell_id for c in cells}) == len(cells)
    # a few minutes on two cores
    assert 60 < estimated_seconds(cells) < 6 * 60


def test_locust_command_is_bounded_and_loopback(tmp_path: Path) -> None:
    cell = Cell("models", "m", "SteadyOneRow", 16, 8.0)
    cmd = locust_command(cell, "http://127.0.0.1:1234", tmp_path, tmp_path / "c", "1")
    assert cmd[:3] == [cmd[0], "-c", "1"] and cmd[0].endswith("taskset")
    joined = " ".join(cmd)
    assert "--headless" in cmd and "-t 8s" in joined and "-u 16" in joined
    assert "--host http://127.0.0.1:1234" in joined and str(LOCUSTFILE) in joined
    spike = Cell("spike", "m", "SteadyOneRow,BatchRows", 8, 12.0, spike=True)
    spike_cmd = " ".join(locust_command(spike, "http://127.0.0.1:1", tmp_path, tmp_path, None))
    assert f"{LOCUSTFILE},{SHAPESFILE}" in spike_cmd and "-t 17s" in spike_cmd
    assert "SteadyOneRow BatchRows" in spike_cmd and "taskset" not in spike_cmd


def test_cli_dry_run(model_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--dry-run", "--models-dir", str(model_repo), "--users", "2"]) == 0
    out = capsys.readouterr().out
    assert "models-logreg-SteadyOneRow-b0-coff-u2" in out and "cells, about" in out
    # the default budget (p99<=5ms@500rps) adds one cell per model paced at 500 req/s
    assert "budget-logreg-SteadyOneRow-b0-coff-u10" in out
    args = ["sweep", "--dry-run", "--models-dir", str(model_repo), "--budget", "none"]
    assert main(args) == 0
    assert "budget-" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sweep", "--budget", "fast please"])
    capsys.readouterr()


def test_core_busy_seconds_reads_proc_stat() -> None:
    from loadtests.processes import core_busy_seconds

    busy = core_busy_seconds("0")
    assert busy is not None and busy > 0
    assert core_busy_seconds(None) is None and core_busy_seconds("999") is None


def test_quick_sweep_includes_typed_models(
    typed_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Models with string columns or another task join the quick sweep beside the binary ones."""
    assert main(["sweep", "--dry-run", "--models-dir", str(typed_repo), "--users", "2"]) == 0
    out = capsys.readouterr().out
    for model in ("shop_regression", "shop_multiclass", "shop_binary_codes"):
        assert f"models-{model}-SteadyOneRow-b0-coff-u2" in out
        assert f"accuracy-{model}-BatchRows" in out
    assert "shifted-" not in out  # shifted traffic needs a fraud model
