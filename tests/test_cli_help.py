"""Every ``tabserve`` command's --help: plain text, a description, and help for every option."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main

COMMANDS = [
    [],
    ["serve"],
    ["bench"],
    ["export"],
    ["export", "build"],
    ["export", "list"],
    ["export", "convert"],
    ["loadtest"],
    ["loadtest", "sweep"],
    ["loadtest", "report"],
    ["retrain"],
]
MARKUP = re.compile(r"``|:mod:|:meth:|:func:|:class:|:data:|issue #|#\d")
SECTIONS = ("options:", "positional arguments:", "commands:")
ROOT = Path(__file__).resolve().parents[1]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code: int | str | None
    try:
        code = main([*argv, "--help"])
    except SystemExit as exc:  # argparse exits after printing help
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    return out


def _entries_without_help(text: str) -> list[str]:
    """Option, argument and subcommand lines that have no help text next to or under them."""
    lines = text.splitlines()
    bare = []
    in_section = False
    for i, line in enumerate(lines):
        if line in SECTIONS:
            in_section = True
            continue
        if not line.strip() or not line.startswith(" "):
            in_section = False
            continue
        indent = len(line) - len(line.lstrip())
        entry = line.strip()
        if not in_section or indent > 4 or entry.startswith("{"):
            continue  # continuation lines, and the {a,b} line heading a subcommand list
        has_text = re.search(r"\S\s{2,}\S", entry) is not None
        following = lines[i + 1] if i + 1 < len(lines) else ""
        continued = len(following) - len(following.lstrip()) > indent + 2 and bool(
            following.strip()
        )
        if not (has_text or continued):
            bare.append(entry)
    return bare


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(["tabserve", *a]))
def test_help_is_plain_and_complete(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    text = _help(argv, capsys)
    assert not MARKUP.search(text), MARKUP.findall(text)
    assert _entries_without_help(text) == []
    if argv:  # a description between the usage lines and the first section
        head = text.split("\n\n")[1]
        assert not head.startswith(SECTIONS) and len(head.split()) >= 5, head


def test_convert_help_warns_about_joblib_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert _help(["export", "convert"], capsys).count("runs arbitrary code") == 1


def test_unknown_command_is_one_line_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exprot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tabserve: unknown command 'exprot'\n") and "Traceback" not in err


def test_retrain_help_imports_no_training_library() -> None:
    probe = (
        "import sys\n"
        "from server.cli import main\n"
        "try:\n"
        "    main(['retrain', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sklearn', 'xgboost', 'pandas')\n"
        "print(__import__('json').dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
