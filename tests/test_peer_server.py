"""The peer port's listening side, on a string transport: the messages of
the batch frames one read brings reach the node in one call."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from dkv.raft import messages as m
from dkv.transport.codec import batch_to_pb
from dkv.transport.peer_common import PeerAccounting
from dkv.transport.peer_frames import BATCH, frame
from dkv.transport.peer_handshake import hello_frame
from dkv.transport.peer_link import PeerSettings
from dkv.transport.peer_server import PeerListenerFactory


class _Node(PeerAccounting):
    """The transport's side the listener talks to; records each hand-over."""

    def __init__(self) -> None:
        self.calls: list[list[m.Message]] = []
        self.init_accounting("b", lambda: "c1", self.calls.append, lambda peer: None, lambda peer, s: None)
        self._links = {}


def _hb(commit: int) -> m.Heartbeat:
    return m.Heartbeat(frm="a", to="b", term=1, commit=commit)


def _batch(*commits: int) -> bytes:
    return frame(BATCH, batch_to_pb("c1", "a", [_hb(c) for c in commits]).SerializeToString())


def _connected() -> tuple[_Node, Protocol, StringTransport]:
    node = _Node()
    factory = PeerListenerFactory(node, Clock(), PeerSettings(), lambda: None)
    conn = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = StringTransport()
    conn.makeConnection(transport)
    return node, conn, transport


def test_the_batches_of_one_read_reach_the_node_in_one_call() -> None:
    node, conn, transport = _connected()
    conn.dataReceived(hello_frame("c1", "a", "b") + _batch(1) + _batch(2, 3))
    assert [[x.commit for x in call] for call in node.calls] == [[1, 2, 3]]
    conn.dataReceived(_batch(4))
    more = _batch(5)
    conn.dataReceived(more[:3])  # a frame cut across reads waits for its rest
    conn.dataReceived(more[3:] + _batch(6))
    assert [[x.commit for x in call] for call in node.calls] == [[1, 2, 3], [4], [5, 6]]
    assert transport.connected


def test_messages_before_a_broken_frame_are_handed_over_and_the_connection_dropped() -> None:
    node, conn, transport = _connected()
    conn.dataReceived(hello_frame("c1", "a", "b"))
    conn.dataReceived(_batch(1) + frame(BATCH, b"\xff\xff not protobuf"))
    assert [[x.commit for x in call] for call in node.calls] == [[1]]
    assert transport.disconnecting
