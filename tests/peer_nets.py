"""Endpoints of both peer transports on loopback, for the shared transport
suite (``tests/test_peer_transport.py``) and the hostile peer-port tests:
``await make(kind, node_id, cluster)`` starts one node's transport and its
listener on a free port (or the port given); ``address`` is what its peers
are told (its RPC address; for the native protocol, the peer port minus
``PEER_PORT_OFFSET``, so the derivation is exercised)."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from dkv.config import PEER_PORT_OFFSET
from dkv.transport.peer_link import PeerSettings

KINDS = ("grpc", "twisted")
#: Short timings, so tests of failures take a second or two.
FAST = PeerSettings(
    ping_interval=0.2, dead_after=1.0, handshake_timeout=0.5, idle_timeout=1.0, backoff_max=0.2,
    max_pending_bytes=1 << 20,
)  # fmt: skip


@attrs.define
class Endpoint:
    kind: str
    transport: Any
    listener: Any
    port: int
    inbox: list[Any]
    unreachable: list[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port - PEER_PORT_OFFSET}" if self.kind == "twisted" else f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop sending, close the listener and every connection it accepted."""
        if self.kind == "grpc":
            await self.listener.stopService()
            return
        self.transport.stop()
        await self.listener.stopListening()
        for conn in list(self.transport.listener.open):
            conn.transport.abortConnection()


async def make(kind: str, node_id: str, cluster: str, port: int = 0, settings: PeerSettings = FAST) -> Endpoint:
    from twisted.internet import reactor

    inbox: list[Any] = []
    unreachable: list[str] = []
    if kind == "grpc":
        from dkv.grpc_server import GrpcServerService
        from dkv.transport.grpc_peer import GrpcTransport

        transport: Any = GrpcTransport(node_id, lambda: cluster, inbox.extend, unreachable.append)
        server = GrpcServerService(
            "127.0.0.1", port, [transport.register], 1 << 20, on_start=transport.start, on_stop=transport.stop
        )
        server.startService()
        return Endpoint(kind, transport, server, server.port, inbox, unreachable)
    from dkv.transport.twisted_peer import TwistedTransport

    transport = TwistedTransport(
        node_id, lambda: cluster, inbox.extend, unreachable.append, reactor=reactor, settings=settings
    )
    listening = reactor.listenTCP(port, transport.listener, interface="127.0.0.1")
    transport.start()
    return Endpoint(kind, transport, listening, listening.getHost().port, inbox, unreachable)


async def stop_sender(endpoint_or_transport: Any) -> None:
    """Stop a transport that has no listener of its own."""
    t = endpoint_or_transport
    if hasattr(t, "_links") and asyncio.iscoroutinefunction(getattr(t, "stop", None)):
        await Deferred.fromFuture(asyncio.ensure_future(t.stop()))
    else:
        t.stop()


def held(transport: Any, peer_id: str) -> int:
    """What a transport holds for peer_id, not yet written to its socket:
    bytes (native protocol) or messages (gRPC)."""
    link = transport._links.get(peer_id)
    if link is None:
        return 0
    return link.pending_bytes if hasattr(link, "pending_bytes") else len(link.queue)
