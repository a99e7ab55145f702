"""User mistakes on the command line: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from tests.support.model_repo import ALL_TEST_MODELS

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing an option value
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.splitlines()


def _csv(path: Path) -> Path:
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    return path


def test_convert_of_a_missing_file_in_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "server.cli", "export", "convert"),
            *("--model", str(tmp_path / "nope.joblib"), "--holdout", str(_csv(tmp_path / "h.csv"))),
            *("--label-column", "y", "--name", "m", "--models-dir", str(tmp_path / "models")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"tabserve export: error: model file {tmp_path / 'nope.joblib'} does not exist"
    ]


@pytest.mark.parametrize(
    ("model", "holdout", "message"),
    [
        ("m.ubj", "missing.csv", "hold-out CSV {tmp}/missing.csv does not exist"),
        ("notes.joblib", "h.csv", "{tmp}/notes.joblib: not a readable joblib model file"),
        ("broken.json", "h.csv", "{tmp}/broken.json: not a readable XGBoost model"),
        (".", "h.csv", "model file {tmp} is not a file"),
    ],
)
def test_convert_refuses_bad_files_in_one_line(
    model: str,
    holdout: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "m.ubj").write_bytes(b"")
    (tmp_path / "notes.joblib").write_text("not a pickle\n")
    (tmp_path / "broken.json").write_text("{}")
    _csv(tmp_path / "h.csv")
    code, err = _run(
        [
            *("export", "convert", "--model", str((tmp_path / model).resolve())),
            *("--holdout", str(tmp_path / holdout), "--label-column", "y", "--name", "m"),
            *("--models-dir", str(tmp_path / "models")),
        ],
        capsys,
    )
    assert code == 2
    errors = [line for line in err if not line.startswith("WARNING: a joblib")]
    assert len(errors) == 1 and errors[0].startswith("tabserve export: error: ")
    assert message.format(tmp=tmp_path) in errors[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "build", "--only", "nope"], "unknown bundled model(s) ['nope']"),
        (["export", "build", "--rows", "10"], "--rows: must be at least 2000, got 10"),
        (["export", "build", "--n-jobs", "0"], "--n-jobs: must be at least 1, got 0"),
        (["export", "build", "--seed", "x"], "--seed: invalid int value: 'x'"),
        (["export", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["loadtest", "report", "/nonexistent"], "no results.json in /nonexistent"),
        (["loadtest", "sweep", "--seconds", "0"], "--seconds must be between 1 and 3600"),
        (["loadtest", "sweep", "--budget", "fast"], "budget must look like"),
        (["bench", "--suite", "everything"], "invalid choice: 'everything'"),
        (["serve", "--port", "http"], "--port: invalid int value: 'http'"),
    ],
)
def test_option_mistakes_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = _run(argv, capsys)
    assert code == 2
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err


def test_sweep_of_an_unknown_model(model_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["loadtest", "sweep", "--dry-run", "--models-dir", str(model_repo), "--models", "nope"]
    code, err = _run(argv, capsys)
    assert code == 2
    assert err == [
        f"tabserve loadtest: error: models not found under {model_repo}: ['nope'] "
        f"(found {sorted(ALL_TEST_MODELS)})"
    ]
