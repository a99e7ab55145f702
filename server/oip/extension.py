"""The gRPC front door as an app extension: listens on ``grpc_port`` for the app's lifetime.

``start`` (in the app's lifespan, before the models load) starts grpcio's asyncio server on the
running event loop, so gRPC and HTTP share one loop and one :class:`server.core.Core`. Until the
models are loaded ServerReady says false and ModelInfer answers UNAVAILABLE, as HTTP answers 503
until ready. When shutdown starts (``draining``, as HTTP stops listening) the gRPC server stops
taking new calls (clients see UNAVAILABLE) and gives the calls running the drain timeout to
finish, while the batchers drain; ``stop`` waits for it. A call that reached grpcio but no handler
yet when the port closes is CANCELLED by grpcio (it never ran).

With ``--workers N`` every worker listens on the same port (grpcio sets SO_REUSEPORT), and the
kernel spreads connections over them, as it does for HTTP.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from server.core import Core
from server.extension import Extension
from server.oip.grpc_service import add_to_server
from server.settings import Settings

log = logging.getLogger("tabserve.grpc")


class GrpcExtension(Extension):
    """Serves ``inference.GRPCInferenceService`` on ``settings.grpc_port`` (None: off)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self, core: Core) -> None:
        port = self.settings.grpc_port
        if port is None:
            return
        limit = self.settings.max_body_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
            ]
        )
        add_to_server(core, server)
        host = self.settings.host
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(
                f"cannot listen for gRPC on {address}: {exc} (is another server running there? "
                "choose TABSERVE_GRPC_PORT)"
            ) from None
        await server.start()
        self.server = server
        log.info("event=grpc_listening address=%s:%d", host, self.port)

    def draining(self) -> None:
        if self.server is not None and self._stopping is None:
            stopping = self.server.stop(grace=self.settings.drain_timeout_s)
            self._stopping = asyncio.get_running_loop().create_task(stopping, name="grpc-stop")

    async def stop(self) -> None:
        if self.server is None:
            return
        self.draining()
        assert self._stopping is not None
        try:
            await self._stopping
        finally:
            self.server = self._stopping = None
