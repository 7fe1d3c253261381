"""The transport suite, run against both peer transports (gRPC on the RPC
port, the native Twisted protocol on the peer port): delivery in order,
another cluster refused, messages for an unreachable peer dropped,
reported and returned unsent, reconnection after the peer restarts, and a bounded backlog for a
peer that never reads."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import protocol

from dkv.raft import messages as m
from dkv.transport.peer_frames import FrameReader
from dkv.transport.peer_handshake import hello_frame
from tests.conftest import wait_for
from tests.peer_nets import KINDS, held, make, stop_sender

pytestmark = pytest.mark.parametrize("kind", KINDS)


def hb(commit: int = 0, frm: str = "a", to: str = "b") -> m.Heartbeat:
    return m.Heartbeat(frm=frm, to=to, term=1, commit=commit)


@pytest_twisted.ensureDeferred
async def test_messages_arrive_in_order(kind: str) -> None:
    a = await make(kind, "a", "c1")
    b = await make(kind, "b", "c1")
    try:
        a.transport.set_peers({"a": a.address, "b": b.address})
        b.transport.set_peers({"a": a.address, "b": b.address})
        await wait_for(lambda: (a.transport.send([hb()]), bool(b.inbox))[1], what="a's link to b")
        await wait_for(
            lambda: (b.transport.send([m.HeartbeatResponse(frm="b", to="a", term=1)]), bool(a.inbox))[1],
            what="b's link to a",
        )
        b.inbox.clear()
        for start in range(0, 1000, 100):  # many sends in one turn, pipelined
            a.transport.send([hb(i) for i in range(start, start + 100)])
        await wait_for(lambda: len(b.inbox) >= 1000, what="1000 messages")
        assert [x.commit for x in b.inbox[-1000:]] == list(range(1000))  # after stray heartbeats
        assert a.transport.sent_bytes["b"] > 0 and b.transport.received_bytes["a"] > 0
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_another_cluster_is_refused(kind: str) -> None:
    from twisted.internet import reactor, task

    b = await make(kind, "b", "c1")
    x = await make(kind, "x", "other")
    a = await make(kind, "a", "c1")
    try:
        x.transport.set_peers({"b": b.address})
        a.transport.set_peers({"b": b.address})
        await wait_for(lambda: (a.transport.send([hb()]), bool(b.inbox))[1], what="a's link to b")
        deadline = reactor.seconds() + 1.5
        while reactor.seconds() < deadline:
            x.transport.send([hb(frm="x")])
            await task.deferLater(reactor, 0.05, lambda: None)
        assert all(msg.frm == "a" for msg in b.inbox)
    finally:
        for e in (a, b, x):
            await e.stop()


@pytest_twisted.ensureDeferred
async def test_messages_for_an_unreachable_peer_are_dropped_and_reported(kind: str) -> None:
    from dkv.config import PEER_PORT_OFFSET
    from dkv.testing.launcher import free_ports

    (closed,) = free_ports(1)  # nothing listens there
    address = f"127.0.0.1:{closed - (PEER_PORT_OFFSET if kind == 'twisted' else 0)}"
    a = await make(kind, "a", "c1")
    try:
        a.transport.set_peers({"b": address})
        for _ in range(3):
            a.transport.send([hb()])
        await wait_for(lambda: (a.transport.send([hb()]), "b" in a.unreachable)[1], what="an unreachable report")
        assert held(a.transport, "b") == 0
        # What was dropped is returned, so a forwarded proposal among it is
        # known never to have been sent (the driver proposes it again).
        forward = m.Propose(frm="a", to="b", term=1, ctx=5, payloads=(b"w",))
        assert list(a.transport.send([hb(), forward])) == [hb(), forward]
        assert list(a.transport.send([hb(to="nobody")])) == [hb(to="nobody")], "no link at all"
    finally:
        await a.stop()


@pytest_twisted.ensureDeferred
async def test_link_reconnects_after_the_peer_restarts(kind: str) -> None:
    b = await make(kind, "b", "c1")
    a = await make(kind, "a", "c1")
    try:
        a.transport.set_peers({"b": b.address})
        await wait_for(lambda: (a.transport.send([hb()]), bool(b.inbox))[1], what="first delivery")
        port = b.port
        await b.stop()
        a.unreachable.clear()
        await wait_for(lambda: (a.transport.send([hb()]), bool(a.unreachable))[1], what="unreachable report")
        b = await make(kind, "b", "c1", port=port)
        await wait_for(lambda: (a.transport.send([hb(7)]), bool(b.inbox))[1], timeout=15, what="reconnect")
        assert all(msg.frm == "a" for msg in b.inbox)
    finally:
        await a.stop()
        await b.stop()


class _NeverReads(protocol.Protocol):
    """Answers the native protocol's hello (gRPC gets nothing it
    understands), then stops reading."""

    def connectionMade(self) -> None:  # noqa: N802
        self.reader = FrameReader()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.reader.feed(data):
            self.transport.write(hello_frame("c1", "b", "a"))
            self.transport.pauseProducing()


@pytest_twisted.ensureDeferred
async def test_backlog_for_a_peer_that_never_reads_is_bounded(kind: str) -> None:
    from twisted.internet import reactor

    from dkv.config import PEER_PORT_OFFSET
    from dkv.transport.grpc_peer import MAX_QUEUED
    from tests.peer_nets import FAST

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(_NeverReads), interface="127.0.0.1")
    offset = PEER_PORT_OFFSET if kind == "twisted" else 0
    a = await make(kind, "a", "c1")
    bound = FAST.max_pending_bytes if kind == "twisted" else MAX_QUEUED
    big = m.AppendEntries(
        frm="a", to="b", term=1, prev_index=0, prev_term=0, entries=(m.Entry(1, 1, data=b"x" * (256 << 10)),), commit=0
    )
    try:
        a.transport.set_peers({"b": f"127.0.0.1:{port.getHost().port - offset}"})
        a.transport.send([hb()])

        def flood() -> bool:
            for _ in range(8):
                a.transport.send([big])
                assert held(a.transport, "b") <= bound
            return "b" in a.unreachable

        await wait_for(flood, timeout=20, what="the backlog to hit its bound")
    finally:
        await a.stop()
        await port.stopListening()
        await stop_sender(a.transport) if kind == "grpc" else None


@pytest_twisted.ensureDeferred
async def test_both_ends_of_a_native_peer_connection_send_small_frames_at_once(kind: str) -> None:
    """TCP_NODELAY on the dialled and the accepted socket: without it Nagle's
    algorithm held a frame until the peer's delayed ACK, and a one-client
    write waited ~40 ms at p99 (measured with benchmarks/vs_etcd.py)."""
    import socket

    if kind != "twisted":
        pytest.skip("gRPC sets its own socket options")
    a = await make(kind, "a", "c1")
    b = await make(kind, "b", "c1")
    try:
        a.transport.set_peers({"a": a.address, "b": b.address})
        await wait_for(lambda: (a.transport.send([hb()]), bool(b.inbox))[1], what="a's link to b")
        dialled = a.transport._links["b"]._protocol.transport.getHandle()
        (accepted,) = [c.transport.getHandle() for c in b.transport.listener.open]
        for sock in (dialled, accepted):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await a.stop()
        await b.stop()
