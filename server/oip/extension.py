"""The gRPC front door as an app extension: listens on ``grpc_port`` for the app's lifetime.

``start`` (in the app's lifespan, before the models load) listens with the app's own HTTP/2
protocol (``server.oip.grpc_connection``) on the running event loop, so gRPC and HTTP share one
loop and one :class:`server.core.Core`. Until the models are loaded ServerReady says false and
ModelInfer answers UNAVAILABLE, as HTTP answers 503 until ready. When shutdown starts
(``draining``, as HTTP stops listening) the port closes and every connection gets GOAWAY: calls
already taken run to their answer, later ones are refused (REFUSED_STREAM, which a client retries
elsewhere or reports UNAVAILABLE). ``stop`` gives the running calls the drain timeout, then closes
what is left.

With ``--workers N`` every worker listens on the same port (SO_REUSEPORT), and the kernel spreads
connections over them, as it does for HTTP.
"""

from __future__ import annotations

import asyncio
import logging

from server.core import Core
from server.extension import Extension
from server.oip.grpc_connection import Front, GrpcConnection
from server.oip.grpc_service import InferenceService
from server.settings import Settings

log = logging.getLogger("tabserve.grpc")


class GrpcExtension(Extension):
    """Serves ``inference.GRPCInferenceService`` on ``settings.grpc_port`` (None: off)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: asyncio.Server | None = None
        self.front: Front | None = None
        self.port: int | None = None

    async def start(self, core: Core) -> None:
        settings = self.settings
        if settings.grpc_port is None:
            return
        front = Front(
            InferenceService(core).methods(),
            max_message=settings.max_body_bytes,
            preface_timeout_s=settings.header_timeout_s,
            max_connections=settings.max_connections,
        )
        host = settings.host
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: GrpcConnection(front),
                host,
                settings.grpc_port,
                reuse_port=settings.workers > 1,
                backlog=1024,
            )
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen for gRPC on {host}:{settings.grpc_port}: "
                f"{exc.strerror or exc} (is another server running there? "
                "choose TABSERVE_GRPC_PORT)"
            ) from None
        self.server, self.front = server, front
        self.port = server.sockets[0].getsockname()[1]
        log.info("event=grpc_listening address=%s:%d", host, self.port)

    def draining(self) -> None:
        if self.server is not None and self.front is not None and not self.front.closing:
            self.server.close()
            self.front.goaway()

    async def stop(self) -> None:
        if self.server is None or self.front is None:
            return
        self.draining()
        front = self.front
        try:
            await asyncio.wait_for(front.idle.wait(), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("event=grpc_drain_timeout calls=%d", front.calls_running())
        front.abort_all()
        self.server = self.front = None
