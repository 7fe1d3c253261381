"""Peer transport: every message survives the protobuf codec; real gRPC
streams deliver batches, drop foreign clusters, and survive a restart."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from dkv.pb import raft_pb2 as pb
from dkv.raft import messages as m
from dkv.transport.codec import message_from_pb, message_to_pb
from tests.conftest import wait_for

ENTRY = m.Entry(7, 3, m.EntryKind.CONFIG, b"\x00cfg")
SAMPLES = [
    m.RequestVote(frm="a", to="b", term=4, last_index=9, last_term=3, pre_vote=True, transfer=True),
    m.VoteResponse(frm="b", to="a", term=4, granted=True, pre_vote=True),
    m.AppendEntries(
        frm="a", to="b", term=4, prev_index=6, prev_term=3, entries=(ENTRY, m.Entry(8, 4)), commit=5, seq=11
    ),
    m.AppendEntries(frm="a", to="b", term=4, prev_index=8, prev_term=4, commit=8, seq=11, commit_only=True),
    m.AppendResponse(frm="b", to="a", term=4, success=False, index=6, hint_index=3, hint_term=2, seq=11),
    m.Heartbeat(frm="a", to="b", term=4, commit=5, seq=12),
    m.HeartbeatResponse(frm="b", to="a", term=4, seq=12),
    m.Propose(frm="b", to="a", term=4, ctx=99, payloads=(b"x", b"", b"y" * 1000)),
    m.ProposeRejected(frm="a", to="b", term=4, ctx=99),
    m.ReadIndexRequest(frm="b", to="a", term=4, ctx=5),
    m.ReadIndexResponse(frm="a", to="b", term=4, ctx=5, index=8, ok=False),
    m.TimeoutNow(frm="a", to="b", term=4),
    m.NotMember(frm="a", to="b", term=4, config_index=17),
]


def test_every_message_type_is_covered() -> None:
    types = {type(s) for s in SAMPLES}
    assert types == set(m.Message.__subclasses__()) - set(m.LOCAL_MESSAGE_TYPES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_codec_round_trip(msg: m.Message) -> None:
    wire = message_to_pb(msg).SerializeToString()
    assert message_from_pb(pb.Message.FromString(wire)) == msg


def test_unknown_body_is_rejected() -> None:
    from dkv.transport.codec import DecodeError

    with pytest.raises(DecodeError):
        message_from_pb(pb.Message(to="a", term=1))


def test_an_entry_of_unknown_kind_drops_its_message_alone() -> None:
    from dkv.transport.codec import DecodeError, messages_from_batch

    bad = message_to_pb(SAMPLES[2])
    bad.append_entries.entries[1].kind = 7
    with pytest.raises(DecodeError, match="unknown entry kind 7"):
        message_from_pb(bad)
    errors: list[Exception] = []
    batch = pb.Batch(messages=[bad, message_to_pb(SAMPLES[5])])
    assert messages_from_batch(batch, errors.append) == [SAMPLES[5]]
    assert [type(e) for e in errors] == [DecodeError]


def _endpoint(node_id: str, cluster: str, inbox: list):
    from dkv.grpc_server import GrpcServerService
    from dkv.transport.grpc_peer import GrpcTransport

    transport = GrpcTransport(node_id, lambda: cluster, inbox.extend, lambda peer: None)
    server = GrpcServerService(
        "127.0.0.1", 0, [transport.register], 1 << 20, on_start=transport.start, on_stop=transport.stop
    )
    return transport, server


@pytest_twisted.ensureDeferred
async def test_messages_flow_over_grpc_and_foreign_clusters_are_dropped() -> None:
    inbox_a: list = []
    inbox_b: list = []
    inbox_x: list = []
    ta, sa = _endpoint("a", "c1", inbox_a)
    tb, sb = _endpoint("b", "c1", inbox_b)
    tx, sx = _endpoint("x", "other", inbox_x)
    for s in (sa, sb, sx):
        s.startService()
    try:
        ta.set_peers({"a": "unused", "b": f"127.0.0.1:{sb.port}"})
        tb.set_peers({"a": f"127.0.0.1:{sa.port}"})
        tx.set_peers({"b": f"127.0.0.1:{sb.port}"})
        hb = m.Heartbeat(frm="a", to="b", term=1, commit=0)
        foreign = m.Heartbeat(frm="x", to="b", term=9, commit=0)

        def send_until_connected() -> bool:
            ta.send([hb])
            tx.send([foreign])
            tb.send([m.HeartbeatResponse(frm="b", to="a", term=1)])
            return bool(inbox_b) and bool(inbox_a)

        await wait_for(send_until_connected, what="links to connect")
        assert all(msg == hb for msg in inbox_b)
        assert inbox_x == [] and foreign not in inbox_b
        # Many messages in one turn arrive in order.
        inbox_b.clear()
        batch = [m.Heartbeat(frm="a", to="b", term=1, commit=i) for i in range(1000)]
        ta.send(batch)
        await wait_for(lambda: len(inbox_b) >= 1000, what="1000 messages")
        assert [x.commit for x in inbox_b[-1000:]] == list(range(1000))
    finally:
        for s in (sa, sb, sx):
            await s.stopService()


@pytest_twisted.ensureDeferred
async def test_link_reports_unreachable_and_reconnects() -> None:
    from dkv.transport.grpc_peer import GrpcTransport

    unreachable: list[str] = []
    inbox_b: list = []
    tb, sb = _endpoint("b", "c1", inbox_b)
    sb.startService()
    port = sb.port
    ta = GrpcTransport("a", lambda: "c1", lambda msgs: None, unreachable.append)
    ta.set_peers({"b": f"127.0.0.1:{port}"})
    ta.start()
    try:
        hb = m.Heartbeat(frm="a", to="b", term=1, commit=0)
        await wait_for(lambda: (ta.send([hb]), bool(inbox_b))[1], what="first delivery")
        await sb.stopService()
        unreachable.clear()
        await wait_for(lambda: (ta.send([hb]), bool(unreachable))[1], what="unreachable report")
        tb2, sb2 = _endpoint("b", "c1", inbox_b)
        sb2.port = port
        sb2.startService()
        inbox_b.clear()
        try:
            await wait_for(lambda: (ta.send([hb]), bool(inbox_b))[1], timeout=15, what="reconnect")
        finally:
            await sb2.stopService()
    finally:
        # A Twisted-driven coroutine awaits Deferreds, so bridge the asyncio side.
        await Deferred.fromFuture(asyncio.ensure_future(ta.stop()))


class _Owner:
    """What a gRPC peer link asks of its transport."""

    max_queue_bytes = 1 << 20

    def __init__(self) -> None:
        self.unreachable: list[str] = []

    def _unreachable(self, peer_id: str) -> None:
        self.unreachable.append(peer_id)


def test_a_grpc_link_returns_what_an_ended_stream_left_queued_once() -> None:
    """Messages still queued when the stream ended were never written: the
    next enqueue returns them (a forward among them is proposed again)."""
    from dkv.transport.grpc_peer import _PeerLink

    link = _PeerLink(_Owner(), "b", "127.0.0.1:1")  # type: ignore[arg-type]
    link.connected = True
    hb = m.Heartbeat(frm="a", to="b", term=1, commit=1)
    forward = m.Propose(frm="a", to="b", term=1, ctx=4, payloads=(b"w",))
    assert list(link.enqueue([hb, forward])) == []
    link.ended()
    later = m.Heartbeat(frm="a", to="b", term=1, commit=2)
    assert list(link.enqueue([later])) == [hb, forward, later]
    assert list(link.enqueue([later])) == [later], "returned once"
    link.connected = True
    assert list(link.enqueue([later])) == [] and len(link.queue) == 1
