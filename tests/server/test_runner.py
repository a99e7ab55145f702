"""The ONNX Runtime wrapper: warm-up with or without usable hold-out rows, outputs per run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from server.modelcard import HOLDOUT_FILE, load_card
from server.runner import Runner


@pytest.mark.parametrize("holdout", ["shipped", "absent", "wrong_shape"])
def test_warm_up_measures_a_cost_whatever_the_holdout(
    model_repo: Path, tmp_path: Path, holdout: str
) -> None:
    vdir = tmp_path / "xgb_small" / "1"
    shutil.copytree(model_repo / "xgb_small" / "1", vdir)
    if holdout == "absent":
        (vdir / HOLDOUT_FILE).unlink()
    elif holdout == "wrong_shape":
        np.savez(vdir / HOLDOUT_FILE, X=np.zeros((4, 3), dtype=np.float32))
    card = load_card(vdir)
    runner = Runner(vdir / card.onnx.file, card)
    try:
        runner.warm_up(inline_max_cost_us=1e9, max_batch_rows=8)
        assert runner.cost_us > 0 and runner.inline
        rows = np.zeros((5, card.input.n_features), dtype=np.float32)
        for n in (1, 5, 2):  # every run answers its own row count
            out = runner.run(rows[:n])
            assert out.dtype == np.float32 and out.shape == (n, len(card.classes))
    finally:
        runner.close()
