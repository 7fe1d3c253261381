"""The native peer protocol's link, on a fake clock and in-memory
connections: jittered exponential backoff, failure detection by pings,
flow control, refusal logged once."""

from __future__ import annotations

import random

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.raft import messages as m
from dkv.transport.peer_frames import BATCH, PING, PONG, FrameReader, frame
from dkv.transport.peer_handshake import hello_frame
from dkv.transport.peer_link import PeerLink, PeerSettings

SETTINGS = PeerSettings(max_pending_bytes=4096)


class Owner:
    node_id = "a"

    def __init__(self) -> None:
        self.sent_bytes: dict[str, int] = {}
        self.unreachable: list[str] = []

    def cluster_id(self) -> str:
        return "c1"

    def _unreachable(self, peer_id: str) -> None:
        self.unreachable.append(peer_id)


class Dialler:
    """connect(): fails while ``refuse`` is set, else connects to a StringTransport."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.refuse = False
        self.attempts: list[float] = []
        self.protocol = None
        self.transport: StringTransport | None = None

    def __call__(self, address, factory) -> Deferred:
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            return fail(ConnectionRefusedError())
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)

    def frames(self) -> list[tuple[bytes, bytes]]:
        assert self.transport is not None
        data = self.transport.value()
        self.transport.clear()
        return FrameReader().feed(data)

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionLost()))


def make(clock: task.Clock, dialler: Dialler) -> tuple[PeerLink, Owner]:
    owner = Owner()
    link = PeerLink(owner, "b", "127.0.0.1:1", clock=clock, connect=dialler, rng=random.Random(1), settings=SETTINGS)
    return link, owner


def up(dialler: Dialler) -> None:
    dialler.protocol.dataReceived(hello_frame("c1", "b", "a"))


def greeted() -> tuple[task.Clock, Dialler, PeerLink, Owner]:
    """A started link whose peer answered its hello, the hello taken off the wire."""
    clock = task.Clock()
    dialler = Dialler(clock)
    link, owner = make(clock, dialler)
    link.start()
    up(dialler)
    dialler.frames()
    return clock, dialler, link, owner


def heartbeat_commits(dialler: Dialler) -> list[int]:
    """The commit of the first heartbeat of each batch written since the last look."""
    from dkv.pb import raft_pb2

    batches = [body for kind, body in dialler.frames() if kind == BATCH]
    return [raft_pb2.Batch.FromString(body).messages[0].heartbeat.commit for body in batches]


def test_reconnects_with_jittered_exponential_backoff() -> None:
    clock = task.Clock()
    dialler = Dialler(clock)
    dialler.refuse = True
    link, _ = make(clock, dialler)
    link.start()
    clock.pump([0.001] * 8000)
    gaps = [b - a for a, b in zip(dialler.attempts, dialler.attempts[1:], strict=False)]
    backoff = SETTINGS.backoff_min
    for gap in gaps[:5]:
        assert backoff / 2 - 0.002 <= gap <= backoff + 0.002, (gap, backoff)
        backoff = min(backoff * 2, SETTINGS.backoff_max)
    assert max(gaps) <= SETTINGS.backoff_max + 0.002
    assert len(set(gaps)) > 3, "the delays are jittered"


def test_a_silent_peer_is_dropped_within_dead_after_and_reported() -> None:
    clock = task.Clock()
    dialler = Dialler(clock)
    link, owner = make(clock, dialler)
    link.start()
    up(dialler)
    assert link.ready
    # Pings go out every ping_interval; answered ones keep the link up.
    for _ in range(5):
        clock.advance(SETTINGS.ping_interval)
        assert (PING, b"") in dialler.frames()
        dialler.protocol.dataReceived(frame(PONG))
    assert not dialler.transport.disconnecting
    # Then the peer goes silent.
    waited = 0.0
    while not dialler.transport.disconnecting:
        clock.advance(SETTINGS.ping_interval)
        waited += SETTINGS.ping_interval
    assert SETTINGS.dead_after <= waited <= SETTINGS.dead_after + SETTINGS.ping_interval
    dialler.close()
    assert owner.unreachable == ["b"] and not link.ready
    hb = m.Heartbeat(frm="a", to="b", term=1, commit=0)
    assert list(link.enqueue([hb])) == [hb], "returned: dropped unsent"
    assert owner.unreachable == ["b", "b"], "messages for a peer that is down are dropped and reported"


def test_a_forward_before_the_peer_answers_the_hello_is_returned_unsent() -> None:
    """Connected (to a proxy, say) but not yet greeted: nothing is written,
    and the caller learns the forward was certainly not sent."""
    clock = task.Clock()
    dialler = Dialler(clock)
    link, _ = make(clock, dialler)
    link.start()
    dialler.frames()  # our hello
    forward = m.Propose(frm="a", to="b", term=1, ctx=7, payloads=(b"x",))
    assert list(link.enqueue([forward])) == [forward]
    assert dialler.frames() == []
    up(dialler)
    assert list(link.enqueue([forward])) == []
    assert [kind for kind, _ in dialler.frames()] == [BATCH]


def test_frames_held_when_the_connection_drops_are_returned_unsent_once() -> None:
    """Held frames were never written: when their connection is lost, the
    next enqueue returns their messages (a forward among them is proposed
    again at the next tick, not left to time out), and they are never written later."""
    clock, dialler, link, _ = greeted()
    dialler.transport.producer.pauseProducing()  # the socket's buffer is full
    hb = m.Heartbeat(frm="a", to="b", term=1, commit=1)
    forward = m.Propose(frm="a", to="b", term=1, ctx=9, payloads=(b"w",))
    assert list(link.enqueue([hb])) == [] and list(link.enqueue([forward])) == []
    assert len(link.pending) == 2 and dialler.frames() == []
    dialler.close()
    assert not link.pending and link.pending_bytes == 0
    later = m.Heartbeat(frm="a", to="b", term=1, commit=2)
    assert list(link.enqueue([later])) == [hb, forward, later], "held first, then this call's (the link is down)"
    assert list(link.enqueue([later])) == [later], "returned once"
    clock.advance(SETTINGS.backoff_max)  # reconnects
    up(dialler)
    dialler.frames()
    assert list(link.enqueue([later])) == []
    assert heartbeat_commits(dialler) == [2]


def test_frames_held_by_a_stopped_link_are_not_returned() -> None:
    _, dialler, link, _ = greeted()
    dialler.transport.producer.pauseProducing()
    link.enqueue([m.Heartbeat(frm="a", to="b", term=1, commit=1)])
    link.stop()
    dialler.close()
    assert link._unsent == []


def test_flow_control_holds_a_bounded_backlog_and_never_duplicates() -> None:
    _, dialler, link, owner = greeted()
    hb = [m.Heartbeat(frm="a", to="b", term=1, commit=i) for i in range(200)]
    dialler.transport.producer.pauseProducing()  # the socket's buffer is full
    unsent = [u for msg in hb for u in link.enqueue([msg])]
    assert link.pending_bytes <= SETTINGS.max_pending_bytes
    assert owner.unreachable, "what did not fit was dropped and reported"
    assert unsent and len(unsent) + len(link.pending) == len(hb), "and returned unsent"
    held = len(link.pending)
    dialler.transport.producer.resumeProducing()
    commits = heartbeat_commits(dialler)
    assert len(commits) == held and not link.pending
    assert commits == list(range(held)), "in order, each once"


def test_a_refusal_is_logged_once_and_retried() -> None:
    lines: list[str] = []

    def observe(event: dict) -> None:
        if "refused us" in str(event.get("reason", "")):
            lines.append(event["reason"])

    globalLogPublisher.addObserver(observe)
    try:
        clock = task.Clock()
        dialler = Dialler(clock)
        link, _ = make(clock, dialler)
        link.start()
        for _ in range(3):
            dialler.protocol.dataReceived(hello_frame("c1", "b", "a", error="it belongs to cluster 'x'"))
            assert dialler.transport.disconnecting and not link.ready
            dialler.close()
            clock.advance(SETTINGS.backoff_max)
        assert len(dialler.attempts) == 4
        assert lines == ["it refused us: it belongs to cluster 'x'"]
    finally:
        globalLogPublisher.removeObserver(observe)


def test_handshake_checks() -> None:
    from dkv.pb import raft_pb2
    from dkv.transport.peer_handshake import VERSION, answer_refusal, hello_refusal

    def hello(**fields) -> raft_pb2.PeerHello:
        h = raft_pb2.PeerHello(version=fields.pop("version", VERSION), cluster_id="c1", to="b", **fields)
        setattr(h, "from", "a")
        return h

    assert hello_refusal(hello(), cluster_id="c1", node_id="b") == ""
    assert "version 9" in hello_refusal(hello(version=9), cluster_id="c1", node_id="b")
    assert "cluster 'c1'" in hello_refusal(hello(), cluster_id="c2", node_id="b")
    assert "node 'b', this is node 'x'" in hello_refusal(hello(), cluster_id="c1", node_id="x")
    answer = raft_pb2.PeerHello(version=VERSION, cluster_id="c1")
    setattr(answer, "from", "b")
    assert answer_refusal(answer, cluster_id="c1", peer_id="b") == ""
    assert "not 'z'" in answer_refusal(answer, cluster_id="c1", peer_id="z")
    answer.error = "no"
    assert answer_refusal(answer, cluster_id="c1", peer_id="b") == "it refused us: no"


def test_peer_ports_are_derived_from_rpc_addresses_unless_routed() -> None:
    from dkv.transport.twisted_peer import TwistedTransport

    t = TwistedTransport(
        "a", lambda: "c1", lambda msgs: None, lambda peer: None, reactor=task.Clock(),
        routes={"c": "10.0.0.9:9000"}, peer_routes={"d": "10.0.0.8:5555"},
    )  # fmt: skip
    t.set_peers({"a": "10.0.0.1:7070", "b": "10.0.0.2:7070", "c": "10.0.0.3:7070", "d": "10.0.0.4:7070"})
    assert t.link("a") is None
    assert {p: t.link(p).address for p in "bcd"} == {
        "b": "10.0.0.2:7072",  # RPC port + 2
        "c": "10.0.0.9:9002",  # its RPC route + 2
        "d": "10.0.0.8:5555",  # its peer-port route
    }
    assert (t.address_of("b"), t.address_of("c")) == ("10.0.0.2:7070", "10.0.0.9:9000")
    t.set_peers({"a": "10.0.0.1:7070", "b": "10.0.0.2:7080"})
    assert t.link("b").address == "10.0.0.2:7082" and t.link("c") is None
