# test-case-name: tests.test_peer_transport
"""Raft messages between nodes over the native peer protocol
(``--peer-transport twisted``): Twisted protocols on the peer port.

Each node dials every peer's peer port for what it sends it (one TCP
connection per directed pair, ``dkv.transport.peer_link``) and accepts its
peers' connections for what they send it (``dkv.transport.peer_server``);
frames are length-prefixed ``dkv.raft.v0`` messages
(``dkv.transport.peer_frames``) after a hello that names the cluster, the
protocol version and both ends (``dkv.transport.peer_handshake``). Snapshots
take a connection of their own (``dkv.transport.peer_snapshots``).

A member's peer port is its RPC port + 2 (the cluster configuration names
RPC addresses). ``peer_routes`` dials some peers' peer ports elsewhere
(``--peer-route ID=HOST:RPC_PORT/PEER_PORT``, a NAT, a tunnel, the test
proxies); ``routes`` says where their RPC ports are, for the calls that
still go there (forwarding to the leader, joining).

Everything runs on the reactor given; time comes from it (tests pass a
``task.Clock`` and an in-memory ``connect``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IProtocolFactory

from dkv.config import PEER_PORT_OFFSET, parse_address
from dkv.raft.messages import Message
from dkv.transport import peer_snapshots
from dkv.transport.peer_common import PeerAccounting
from dkv.transport.peer_link import Connect, PeerLink, PeerSettings
from dkv.transport.peer_server import CertCheck, PeerListenerFactory
from dkv.transport.snapshots import OutgoingSnapshot

__all__ = ["PeerSettings", "TwistedTransport", "peer_address"]


def peer_address(rpc_address: str, offset: int = PEER_PORT_OFFSET) -> str:
    """HOST:PORT of the peer port of the member whose RPC port is at rpc_address."""
    host, _, port = rpc_address.rpartition(":")
    return f"{host}:{int(port) + offset}"


class TwistedTransport(PeerAccounting):
    """Sends the core's messages to peers and hands received ones to on_receive
    (the same contract as ``GrpcTransport``)."""

    def __init__(
        self,
        node_id: str,
        cluster_id: Callable[[], str],
        on_receive: Callable[[list[Message]], None],
        on_unreachable: Callable[[str], None],
        *,
        reactor: Any,
        routes: Mapping[str, str] | None = None,
        peer_routes: Mapping[str, str] | None = None,
        on_round_trip: Callable[[str, float], None] = lambda peer, seconds: None,
        client_tls: Callable[[str], IOpenSSLClientConnectionCreator | None] = lambda host: None,
        cert_check: Callable[[], CertCheck | None] = lambda: None,
        connect: Connect | None = None,
        rng: random.Random | None = None,
        settings: PeerSettings | None = None,
    ) -> None:
        self.init_accounting(node_id, cluster_id, on_receive, on_unreachable, on_round_trip)
        self.reactor = reactor
        #: Every member's configured (RPC) address, by id (our own included).
        self.members: dict[str, str] = {}
        #: Reach these peers' RPC ports here instead of at their configured address.
        self.routes = dict(routes or {})
        #: Dial these peers' peer ports here instead of at RPC port + PEER_PORT_OFFSET.
        self.peer_routes = dict(peer_routes or {})
        self.settings = settings or PeerSettings()
        self._client_tls = client_tls
        self._connect = connect or self._dial
        self._rng = rng or random.Random()
        self._links: dict[str, PeerLink] = {}
        self._running = False
        #: Serves the peer port (listen on it with ``reactor.listenTCP`` or a service).
        self.listener = PeerListenerFactory(self, reactor, self.settings, cert_check)
        #: Takes snapshot transfers (dkv.transport.snapshots.SnapshotReceiver).
        self.snapshot_receiver: Any = None

    def _dial(self, address: str, factory: IProtocolFactory) -> Deferred[Any]:
        host, port = parse_address(address, "peer address")
        endpoint: Any = HostnameEndpoint(self.reactor, host, port, timeout=self.settings.connect_timeout)
        creator = self._client_tls(host)
        if creator is not None:
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint.connect(factory)

    def start(self) -> None:
        self._running = True
        for link in self._links.values():
            link.start()

    def stop(self) -> None:
        self._running = False
        for link in self._links.values():
            link.stop()

    def peer_address_of(self, peer_id: str, rpc_address: str) -> str:
        """Where we dial peer_id's peer port."""
        return self.peer_routes.get(peer_id) or peer_address(self.routes.get(peer_id, rpc_address))

    def set_peers(self, addresses: Mapping[str, str]) -> None:
        """Make the set of links match addresses (our own id excluded)."""
        self.members = dict(addresses)
        wanted = {i: self.peer_address_of(i, a) for i, a in addresses.items() if i != self.node_id}
        for peer_id in list(self._links):
            link = self._links[peer_id]
            if wanted.get(peer_id) != link.address:
                del self._links[peer_id]
                link.stop()
        for peer_id, address in wanted.items():
            if peer_id not in self._links:
                link = PeerLink(
                    self, peer_id, address, clock=self.reactor, connect=self._connect, rng=self._rng,
                    settings=self.settings,
                )  # fmt: skip
                self._links[peer_id] = link
                if self._running:
                    link.start()

    async def send_snapshot(self, peer_id: str, snap: OutgoingSnapshot, term: int) -> None:
        """Stream snap to peer_id over a connection of its own (see
        ``dkv.transport.peer_snapshots.send_snapshot``); raises on failure."""
        address = self.members.get(peer_id)
        if address is None and peer_id not in self.peer_routes:
            raise RuntimeError(f"{peer_id!r} is not a member")
        where = self.peer_address_of(peer_id, address or "")
        await peer_snapshots.send_snapshot(self._connect, where, self.cluster_id(), self.node_id, peer_id, term, snap)

    def link(self, peer_id: str) -> PeerLink | None:
        return self._links.get(peer_id)

    def member_address(self, node_id: str) -> str | None:
        """node_id's address in the configuration (not its route)."""
        return self.members.get(node_id)

    def address_of(self, peer_id: str) -> str | None:
        """Where we reach peer_id's RPC port (its route if one is set)."""
        return self.routes.get(peer_id) or self.members.get(peer_id)
