# test-case-name: tests.test_transport,tests.test_peer_transport
"""What every peer transport does with the messages it carries, whatever
the wire: heartbeat round trips, byte counts, and handing received batches
to the core (dropping another cluster's, logged once per sender).

``PeerAccounting`` is a mixin: its subclass sets the attributes it names in
its ``__init__`` (``init_accounting`` sets them all)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from dkv.logs import logger
from dkv.pb import raft_pb2
from dkv.raft.messages import Heartbeat, HeartbeatResponse, Message
from dkv.transport.codec import messages_from_batch

#: Seconds after which a heartbeat's answer no longer counts as a round trip.
RTT_FORGET = 1.0

log = logger("dkv.transport")


class _Queue(Protocol):
    def enqueue(self, messages: Sequence[Message]) -> Sequence[Message]: ...


class PeerAccounting:
    node_id: str
    cluster_id: Callable[[], str]
    _on_receive: Callable[[list[Message]], None]
    _on_unreachable: Callable[[str], None]
    _on_round_trip: Callable[[str, float], None]
    #: Bytes of Raft batches sent to / received from each peer.
    sent_bytes: dict[str, int]
    received_bytes: dict[str, int]
    #: peer -> (seq, monotonic send time) of its heartbeat awaiting an answer.
    _heartbeats: dict[str, tuple[int, float]]
    _foreign_logged: set[str]
    #: peer -> the link that queues what is sent to it (the subclass's).
    _links: Mapping[str, _Queue]

    def init_accounting(
        self,
        node_id: str,
        cluster_id: Callable[[], str],
        on_receive: Callable[[list[Message]], None],
        on_unreachable: Callable[[str], None],
        on_round_trip: Callable[[str, float], None],
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._on_receive = on_receive
        self._on_unreachable = on_unreachable
        self._on_round_trip = on_round_trip
        self.sent_bytes = {}
        self.received_bytes = {}
        self._heartbeats = {}
        self._foreign_logged = set()

    def send(self, messages: Sequence[Message]) -> list[Message]:
        """Queue each message on its recipient's link, in order, noting the
        heartbeats whose answers time a round trip; a message for a peer
        without a link is dropped. Returns the messages dropped unsent
        (``dkv.transport.Transport.send``)."""
        by_peer: dict[str, list[Message]] = {}
        for msg in messages:
            by_peer.setdefault(msg.to, []).append(msg)
            if type(msg) is Heartbeat:
                self._heartbeat_sent(msg)
        unsent: list[Message] = []
        for peer_id, msgs in by_peer.items():
            link = self._links.get(peer_id)
            if link is None:
                unsent.extend(msgs)
            else:
                unsent.extend(link.enqueue(msgs))
        return unsent

    def _unreachable(self, peer_id: str) -> None:
        self._on_unreachable(peer_id)

    def _heartbeat_sent(self, msg: Heartbeat) -> None:
        now = time.monotonic()
        waiting = self._heartbeats.get(msg.to)
        if waiting is None or now - waiting[1] > RTT_FORGET:
            self._heartbeats[msg.to] = (msg.seq, now)

    def _heartbeat_answered(self, msg: HeartbeatResponse) -> None:
        waiting = self._heartbeats.get(msg.frm)
        if waiting is not None and waiting[0] == msg.seq:
            del self._heartbeats[msg.frm]
            seconds = time.monotonic() - waiting[1]
            if seconds <= RTT_FORGET:
                self._on_round_trip(msg.frm, seconds)

    def _receive(self, batch: raft_pb2.Batch, size: int = 0) -> None:
        msgs = self._messages(batch, size)
        if msgs:
            self._deliver(msgs)

    def _deliver(self, msgs: list[Message]) -> None:
        """Hand msgs (decoded by ``_messages``) to the node, in one call."""
        self._on_receive(msgs)

    def _messages(self, batch: raft_pb2.Batch, size: int = 0) -> list[Message]:
        """batch's messages, counted; none from a node of another cluster
        (logged once per sender)."""
        sender = getattr(batch, "from")
        if batch.cluster_id != self.cluster_id():
            if sender not in self._foreign_logged:
                self._foreign_logged.add(sender)
                log.warn(
                    "dropping messages from {sender}: it belongs to cluster {theirs!r}, we to {ours!r}",
                    sender=sender,
                    theirs=batch.cluster_id,
                    ours=self.cluster_id(),
                )
            return []
        received = self.received_bytes
        received[sender] = received.get(sender, 0) + size
        msgs = messages_from_batch(
            batch, lambda e: log.warn("undecodable message from {sender}: {e}", sender=sender, e=e)
        )
        for msg in msgs:
            if type(msg) is HeartbeatResponse:
                self._heartbeat_answered(msg)
        return msgs
