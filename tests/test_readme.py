"""The README stays true: its two commands, CI's command, and the generated settings table."""

from __future__ import annotations

from pathlib import Path

from server.settings import settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    current = readme[readme.index(begin) + len(begin) : readme.index(end)].strip()
    assert current == settings_table(), "regenerate with: python -m server.settings"


def test_readme_two_commands_and_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci
