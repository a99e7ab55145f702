"""tabserve serve: run the inference server with uvicorn (uvloop event loop, httptools parser).

Flags override ``TABSERVE_*`` environment variables. The flags are written back into the
environment so that every worker process (``--workers N``) builds the same settings through the
factory ``server.app:create_app_from_env``. The admin token is read from ``--admin-token-file
PATH`` (surrounding whitespace stripped) or taken from ``TABSERVE_ADMIN_TOKEN``, and never
printed; there is no flag taking the token itself, which would show it in ``/proc/*/cmdline``.

The socket is bound before anything else (a busy port: one line on stderr, exit code 2, before
any model loads); uvicorn then serves on it with tabserve's HTTP protocol
(``server.connections``: read timeouts, connection cap, early 413, shutdown of keep-alive
connections). uvicorn's graceful timeout is the drain timeout plus ``SHUTDOWN_MARGIN_S``: one
setting (``TABSERVE_DRAIN_TIMEOUT_S``) bounds the whole shutdown.

Why uvicorn: the issue's prototype measured uvicorn + uvloop + httptools at 23k req/s for an empty
Litestar handler against granian's 21k; on this app (pinned core, wrk c=64, two alternating runs on
a shared machine) uvicorn served the floor at 14.7k/17.5k req/s against granian's 14.3k/13.4k, and
one-row predict at 9.5k/10.2k against 10.1k/9.2k: no reason to switch.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import socket
import sys
from pathlib import Path

from pydantic import ValidationError

from server.settings import Settings

# flag -> settings field (environment variable TABSERVE_<FIELD>)
FLAGS = {
    "host": "host",
    "port": "port",
    "workers": "workers",
    "models_dir": "models_dir",
    "redis_url": "redis_url",
    "log_level": "log_level",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    # No abbreviations: "--admin-token SECRET" must not be taken for --admin-token-file.
    p = argparse.ArgumentParser(
        prog="tabserve serve", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--host", help="address to listen on (TABSERVE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (TABSERVE_PORT, default 8000)")
    p.add_argument("--workers", type=int, help="server processes (TABSERVE_WORKERS, default 1)")
    p.add_argument("--models-dir", help="model repository (TABSERVE_MODELS_DIR, default models)")
    p.add_argument("--redis-url", help="shared cache, redis://... (TABSERVE_REDIS_URL)")
    p.add_argument("--log-level", help="debug, info, warning, error (TABSERVE_LOG_LEVEL)")
    p.add_argument(
        "--admin-token-file",
        metavar="PATH",
        help="file holding the bearer token enabling /admin (or TABSERVE_ADMIN_TOKEN)",
    )
    return p.parse_args(argv)


def read_token_file(path: str) -> str:
    """The token in ``path`` without surrounding whitespace; ValueError if unreadable or empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read admin token file {path}: {exc}") from None
    if not token:
        raise ValueError(f"admin token file {path} is empty")
    return token


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for flag, field in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"TABSERVE_{field.upper()}"] = str(value)
    if args.admin_token_file is not None:
        try:
            os.environ["TABSERVE_ADMIN_TOKEN"] = read_token_file(args.admin_token_file)
        except ValueError as exc:
            print(f"tabserve serve: {exc}", file=sys.stderr)
            return 2
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"tabserve serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not settings.models_dir.is_dir():
        print(
            f"tabserve serve: models directory {settings.models_dir} does not exist "
            "(build the bundled models with `make models`)",
            file=sys.stderr,
        )
        return 2

    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(
            f"tabserve serve: cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc} (is another server running there? choose --port)",
            file=sys.stderr,
        )
        return 2
    _check_open_files(settings.max_connections)
    run(settings, sock)
    return 0


def _check_open_files(max_connections: int) -> None:
    """Warn when the open-file limit is below the connection cap (accept() would fail first)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + 256 > soft:
        print(
            f"tabserve serve: warning: the open-file limit ({soft}) is below "
            f"TABSERVE_MAX_CONNECTIONS ({max_connections}) plus room for models and Redis; "
            "raise it (ulimit -n) or lower the cap",
            file=sys.stderr,
        )


SHUTDOWN_MARGIN_S = 2
"""uvicorn's graceful timeout is the drain timeout plus this (time to write the last answers)."""


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound but not yet listening: a busy port fails here, before the
    models load (connections are refused, as before, until the server starts listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(settings: Settings, sock: socket.socket) -> None:
    """uvicorn on ``sock``, with tabserve's HTTP protocol (``server.connections``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from server.connections import TabserveHttpProtocol
    from server.workershare import create_share_dir

    config = uvicorn.Config(
        "server.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        loop="uvloop",
        http=TabserveHttpProtocol,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s) + SHUTDOWN_MARGIN_S,
    )
    logging.getLogger("uvicorn.error").info(
        "Listening on http://%s:%d (serving once the models are loaded)",
        settings.host,
        sock.getsockname()[1],
    )
    # The workers publish their metrics here for one another (server.workershare).
    shared = create_share_dir(os.getpid()) if config.workers > 1 else None
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if shared is not None:
            shutil.rmtree(shared, ignore_errors=True)
