"""The profile harness, bounded: a profiled real server under load, its stages and the
collector's pauses; the stage rules on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.profile import profile, stage_of


def test_functions_go_to_their_stage() -> None:
    assert stage_of("/x/server/payload.py", "decode_predict") == "decode"
    assert stage_of("/x/server/payload.py", "encode_predict") == "encode"
    assert stage_of("/x/server/batcher.py", "_admit") == "admission"
    assert stage_of("/x/server/monitoring/monitor.py", "observe") == "monitoring"
    assert stage_of("~", "<built-in method onnxruntime.capi.x.run>") == "onnxruntime"
    assert stage_of("/x/unknown.py", "f") == "other"


@pytest.mark.e2e
@pytest.mark.parametrize("route", ["predict", "floor-asgi"])
def test_a_profiled_run_reports_its_stages(model_repo: Path, tmp_path: Path, route: str) -> None:
    out = tmp_path / "run.prof"
    report = profile(model_repo, "xgb_small", 4, 0.5, out, {}, route)
    assert report["requests"] > 50 and report["real_cpu_us_per_request"] > 0
    stages = report["stages_us"]
    assert stages["read"] > 0 and stages["write"] > 0
    if route == "predict":
        assert stages["onnxruntime"] > 0 and stages["decode"] > 0 and stages["batch"] > 0
    else:
        assert "onnxruntime" not in stages
    assert set(report["gc"]) == {"gen0", "gen1", "gen2"}
    assert out.is_file() and report["top_functions_us"]
