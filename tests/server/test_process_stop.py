"""``loadtests.serveproc.stop_process``: how server and Locust processes are stopped (real ones)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from loadtests.serveproc import stop_process

IGNORE_SIGTERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def python(code: str, new_session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=new_session
    )


def wait_ready(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return proc.stdout.readline()


def test_a_running_process_is_terminated() -> None:
    with python("print('ready', flush=True)\nimport time\ntime.sleep(600)") as proc:
        wait_ready(proc)
        assert stop_process(proc, 10.0, group=False) == -signal.SIGTERM


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    with python(IGNORE_SIGTERM) as proc:
        wait_ready(proc)
        assert stop_process(proc, 0.2, group=False) == -signal.SIGKILL


def test_an_exited_process_keeps_its_exit_code() -> None:
    with python("raise SystemExit(3)") as proc:
        proc.wait(timeout=30)
        assert stop_process(proc, 10.0, group=False) == 3


def test_group_stop_reaches_children_that_outlive_their_leader(tmp_path: Path) -> None:
    # The leader starts a child that ignores SIGTERM, prints its pid and exits on its own.
    child = tmp_path / "child.py"
    child.write_text(IGNORE_SIGTERM)
    code = (
        "import subprocess, sys\n"
        f"c = subprocess.Popen([sys.executable, {str(child)!r}], stdout=subprocess.PIPE)\n"
        "c.stdout.readline()\n"
        "print(c.pid, flush=True)\n"
    )
    with python(code, new_session=True) as leader:
        orphan = psutil.Process(int(wait_ready(leader)))
        try:
            leader.wait(timeout=30)
            assert stop_process(leader, 10.0, group=True) == 0
            orphan.wait(timeout=30)  # raises TimeoutExpired if the child is still alive
        finally:
            if orphan.is_running():
                orphan.kill()
