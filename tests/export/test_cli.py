"""``tabserve export``: build with progress, --if-missing, list as a table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.cli import main
from export.repository import model_versions, valid_cards
from server.modelcard import BinaryMetrics, load_card
from tests.support.model_repo import ALL_TEST_MODELS


def test_list_prints_a_table(model_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--models-dir", str(model_repo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name",
        "version",
        "task",
        "metric",
        "value",
        "µs/row@64",
        "µs@1",
        "size",
        "parity",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(ALL_TEST_MODELS)
    card = load_card(model_repo / "xgb_small" / "1")
    assert isinstance(card.metrics, BinaryMetrics)
    row = rows["xgb_small"]
    assert row[1:4] == ["1", "binary", "PR-AUC"]
    assert row[4] == f"{card.metrics.pr_auc:.3f}"
    assert row[-1] == f"{card.parity.max_abs_diff:.1e}"
    assert rows["pricing_sklearn"][2:4] == ["regression", "RMSE"]
    assert rows["returns_xgb"][2:4] == ["multiclass", "macro-F1"]


def test_list_reports_broken_versions(repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(repo_copy / "logreg" / "1", repo_copy / "logreg" / "2")
    (repo_copy / "logreg" / "2" / "model.json").write_text("{}")
    assert main(["list", "--models-dir", str(repo_copy)]) == 0
    out, err = capsys.readouterr()
    assert "skipped:" in err and "logreg/2" in err
    assert len(out.splitlines()) == 1 + len(ALL_TEST_MODELS)


def test_list_of_an_empty_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--models-dir", str(tmp_path)]) == 0
    assert "no models" in capsys.readouterr().out


def test_build_if_missing_does_nothing_when_models_exist(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--if-missing", "--models-dir", str(repo_copy)]) == 0
    assert "nothing to build" in capsys.readouterr().err
    assert model_versions(repo_copy, "logreg") == [1]
    assert model_versions(repo_copy, "hist_gb") == []


def test_build_only_shows_progress_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["build", "--only", "logreg", "cancer_logreg", "--rows", "3000", "--n-jobs", "1"]
    args += ["--models-dir", str(tmp_path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.startswith(
        f"building 2 models into {tmp_path} with 1 training thread, "
        "cross-validation off (--full runs it)\n"
    )
    assert "[1/2] logreg: training" in err and "[2/2] cancer_logreg: published version 1" in err
    assert "cross-validated" not in err
    assert [c.name for c in valid_cards(tmp_path)] == ["cancer_logreg", "logreg"]
    assert all(c.metrics.cv_pr_auc_mean is None for c in valid_cards(tmp_path))
    assert main(args) == 0
    assert "unchanged, version 1 is current" in capsys.readouterr().err
    assert model_versions(tmp_path, "logreg") == [1] and model_versions(
        tmp_path, "cancer_logreg"
    ) == [1]


def test_full_build_records_cross_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["build", "--only", "cancer_logreg", "--n-jobs", "1", "--models-dir", str(tmp_path)]
    assert main([*args, "--full"]) == 0
    err = capsys.readouterr().err
    assert "with 3-fold cross-validation" in err
    assert "[1/1] cancer_logreg: 3-fold cross-validated PR-AUC…" in err
    [card] = valid_cards(tmp_path)
    assert card.metrics.cv_pr_auc_mean is not None


def test_models_dir_defaults_to_the_environment(
    repo_copy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABSERVE_MODELS_DIR", str(repo_copy))
    assert main(["build", "--if-missing"]) == 0
    assert f"{repo_copy} already holds models; nothing to build" in capsys.readouterr().err
    assert main(["list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed == set(ALL_TEST_MODELS)


def test_build_rejects_unknown_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--only", "nope", "--models-dir", str(tmp_path)]) == 2
    assert "unknown bundled model" in capsys.readouterr().err


def test_convert_help_warns_about_joblib(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert capsys.readouterr().out.count("runs arbitrary code") == 1
