"""``tabserve serve`` flags: the admin token comes from a file or the environment, never argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.serve import main, parse_args, read_token_file


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-token\n")
    assert read_token_file(str(path)) == "s3cret-token"


def test_no_flag_takes_the_token_itself() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--admin-token", "s3cret-token"])


@pytest.mark.parametrize("content", [None, "", " \n"])
def test_unreadable_or_empty_token_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    assert main(["--admin-token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert ("cannot read" if content is None else "is empty") in err
