"""Time a first run as a new user has it: a fresh copy of the repository, no ``.venv``, no models,
then ``make serve`` until ``/health/ready`` answers.

``python -m loadtests.first_run [--port 8931] [--no-pip-cache] [--keep]``

The copy is the working tree's tracked and untracked (not ignored) files, so uncommitted changes
count; ``--no-pip-cache`` sets ``PIP_NO_CACHE_DIR=1`` so packages are downloaded as on a new
machine. It prints the seconds to ready and the load average before and after (a busy machine
makes the build slower). The server is stopped by its process group; the copy is removed unless
``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if name.startswith("models/") and name != "models/README.md":
            continue
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.first_run", description=__doc__)
    p.add_argument("--port", type=int, default=8931, help="port make serve listens on")
    p.add_argument("--no-pip-cache", action="store_true", help="download packages (no pip cache)")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tabserve-first-run-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TABSERVE_", "MAKE"))}
    env["TABSERVE_PORT"] = str(args.port)
    if args.no_pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    log = work / "make-serve.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        copy_tree(work)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["make", "serve"],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while not ready(args.port):
            if proc.poll() is not None:
                print(f"make serve exited {proc.returncode}; see {log}", file=sys.stderr)
                return 1
            if time.monotonic() - started > args.timeout:
                print(f"not ready after {args.timeout:g} s; see {log}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        seconds = time.monotonic() - started
        print(
            f"ready after {seconds:.1f} s (load average {load_before:.2f} before, "
            f"{os.getloadavg()[0]:.2f} at ready; pip cache {'off' if args.no_pip_cache else 'on'})"
        )
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
