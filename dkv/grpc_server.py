# test-case-name: tests.test_grpc_kv
"""The gRPC server on the RPC port, as a Twisted service.

One ``grpc.aio`` server carries the public ``dkv.v0.KV`` service and the peer
``dkv.raft.v0.Raft`` service, in plaintext or, given credentials (see
``dkv.tls.node_tls``), over TLS. It is created in ``startService`` (gRPC objects
must not cross a fork) on the asyncio loop that runs Twisted's reactor.
SO_REUSEPORT is off, so a port already in use is an error, not a silent
second listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc
from grpc import aio
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from dkv.aio import deferred_from
from dkv.config import host_port
from dkv.errors import StartupError
from dkv.logs import logger
from dkv.transport.grpc_peer import MAX_MESSAGE_BYTES

log = logger("dkv.grpc")


class GrpcServerService(Service):
    def __init__(
        self,
        host: str,
        port: int,
        registrations: Sequence[Callable[[aio.Server], None]],
        max_message_bytes: int,
        on_start: Callable[[], None] = lambda: None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        interceptors: Sequence[aio.ServerInterceptor] = (),
        credentials: Callable[[], grpc.ServerCredentials | None] = lambda: None,
    ) -> None:
        #: Asked once, in ``startService``: the port's TLS (None: plaintext).
        self._credentials = credentials
        self.host = host
        self._interceptors = list(interceptors)
        self.port = port
        self._registrations = registrations
        self._max_message_bytes = max_message_bytes
        self._on_start = on_start
        self._on_stop = on_stop
        self.server: aio.Server | None = None
        self._start_task: asyncio.Future[None] | None = None

    def startService(self) -> None:
        """Binds synchronously: raises StartupError if it cannot."""
        super().startService()

        self.server = aio.server(
            interceptors=self._interceptors or None,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max(self._max_message_bytes, MAX_MESSAGE_BYTES)),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
            ]
        )
        for register in self._registrations:
            register(self.server)
        address = host_port(self.host, self.port)
        credentials = self._credentials()
        try:
            if credentials is None:
                bound = self.server.add_insecure_port(address)
            else:
                bound = self.server.add_secure_port(address, credentials)
        except RuntimeError:
            bound = 0
        if not bound:
            raise StartupError(f"cannot listen on rpc port {address}: address in use or unavailable")
        self.port = bound
        self._start_task = asyncio.ensure_future(self.server.start())
        self._on_start()

    def when_started(self) -> Deferred[None]:
        """Fires once the server has started serving (precondition: this
        service started); fails if it could not."""
        assert self._start_task is not None, "the gRPC server service has not started"
        return deferred_from(asyncio.shield(self._start_task))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self.server is None:
            return succeed(None)
        server, self.server = self.server, None

        async def stop() -> None:
            if self._on_stop is not None:
                await self._on_stop()
            await server.stop(grace=0.5)

        return deferred_from(stop())
