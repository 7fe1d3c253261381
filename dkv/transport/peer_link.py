# test-case-name: tests.test_peer_transport
"""The dialling side of the native peer protocol: one link per peer.

A link dials its peer's peer port, says hello, and once the peer has
answered writes every batch the core sends it as one frame, at once
(pipelined: nothing waits for an answer; Raft's replies come back on the
peer's own link to us). It pings every ``ping_interval`` seconds; the peer
answers each ping, and a link that has heard nothing for ``dead_after``
seconds is dropped (a silent partition is noticed within about that long).

Flow control: the link is the connection's streaming producer. When the
socket's send buffer is full, Twisted pauses it; frames then wait in the
link up to ``max_pending_bytes``, and a batch beyond that is dropped and the
core told the peer is unreachable (it goes back to probing). Nothing is ever
sent twice: a dropped batch is gone, and Raft retransmits what matters.
Messages for a peer whose link is not up are dropped the same way. Either
drop is reported to the caller (``enqueue`` returns what it dropped): those
messages were certainly never sent, so a client proposal forwarded among
them can be proposed again (``dkv.transport.Transport.send``). So are the
frames still held when their connection is lost: no byte of them was
written, and the next ``enqueue`` returns their messages (a forward among
them is proposed again at the next tick instead of waiting for its deadline).

A link that fails or breaks reconnects after a jittered exponential
backoff (``backoff_min`` doubling up to ``backoff_max``, each delay drawn
uniformly from its upper half). It logs once when it goes down, once when it
comes back, and once per reason the peer refuses it, never per retry.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from google.protobuf.message import DecodeError
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IPushProducer
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from dkv.logs import logger
from dkv.pb import raft_pb2
from dkv.raft.messages import Message
from dkv.transport.codec import batch_to_pb
from dkv.transport.peer_frames import (
    BATCH,
    HELLO,
    MAX_FRAME_BYTES,
    PING,
    PONG,
    FrameError,
    FrameReader,
    frame,
    no_delay,
)
from dkv.transport.peer_handshake import answer_refusal, hello_frame
from dkv.write_now import write_now

__all__ = ["Connect", "LinkOwner", "PeerLink", "PeerSettings"]

log = logger("dkv.transport")

_PING = frame(PING)


@attrs.frozen
class PeerSettings:
    """The native peer protocol's timings and bounds (seconds, bytes)."""

    ping_interval: float = 1.0
    dead_after: float = 3.0
    connect_timeout: float = 2.0
    handshake_timeout: float = 5.0
    #: A listener drops a connection it has heard nothing on for this long.
    idle_timeout: float = 10.0
    backoff_min: float = 0.05
    backoff_max: float = 1.0
    max_frame: int = MAX_FRAME_BYTES
    max_pending_bytes: int = 8 << 20


#: Dials address with factory: a Deferred that fires with the connected protocol.
Connect = Callable[[str, IProtocolFactory], "Deferred[Any]"]


class LinkOwner(Protocol):
    """What a link needs from its transport."""

    node_id: str
    sent_bytes: dict[str, int]

    def cluster_id(self) -> str: ...

    def _unreachable(self, peer_id: str) -> None: ...


class _Dialled(TxProtocol):
    """One connection of a link; everything it hears goes to the link."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.reader = FrameReader(link.settings.max_frame)

    def connectionMade(self) -> None:  # noqa: N802 - Twisted name
        no_delay(self.transport)
        self.transport.registerProducer(_Producer(self.link, self), True)  # type: ignore[union-attr]
        self.link._made(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            self.link._fail(self, f"it sent {e}")
            return
        for kind, body in frames:
            if not self.link._heard(self, kind, body):
                return

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.link._lost(self, reason)


@implementer(IPushProducer)
class _Producer:
    """Twisted pauses this when the connection's send buffer is full."""

    def __init__(self, link: PeerLink, protocol: _Dialled) -> None:
        self._link = link
        self._protocol = protocol

    def pauseProducing(self) -> None:  # noqa: N802
        if self._link._protocol is self._protocol:
            self._link.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        if self._link._protocol is self._protocol:
            self._link._resume()

    def stopProducing(self) -> None:  # noqa: N802
        pass


class PeerLink:
    """The link to one peer (see the module's docstring)."""

    def __init__(
        self,
        owner: LinkOwner,
        peer_id: str,
        address: str,
        *,
        clock: Any,
        connect: Connect,
        rng: random.Random,
        settings: PeerSettings,
    ) -> None:
        self.owner = owner
        self.peer_id = peer_id
        #: HOST:PORT of the peer's peer port (or its route).
        self.address = address
        self.settings = settings
        self._clock = clock
        self._connect = connect
        self._rng = rng
        self._running = False
        self._protocol: _Dialled | None = None
        self._attempt: Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None
        #: The peer answered our hello: batches may flow.
        self.ready = False
        self.paused = False
        #: Frames held while the socket's buffer is full, with their messages.
        self.pending: deque[tuple[bytes, Sequence[Message]]] = deque()
        self.pending_bytes = 0
        #: The messages of held frames lost with their connection, never
        #: written: returned by the next ``enqueue``.
        self._unsent: list[Message] = []
        self._backoff = settings.backoff_min
        self._last_heard = 0.0
        self._down_logged = False
        self._refusal_logged = ""

    # -- the core's side ------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Write messages to the peer now (or hold them while the socket's
        buffer is full); returns those dropped unsent: all of them when the
        link is not up or the held bytes would pass the bound, and before
        them those of frames held when an earlier connection was lost."""
        earlier = self._unsent
        if earlier:
            self._unsent = []
        protocol = self._protocol
        if not self.ready or protocol is None:
            # Nothing would carry them; the core retransmits what matters,
            # and the driver retries the forwards among them (returned).
            self.owner._unreachable(self.peer_id)
            return [*earlier, *messages] if earlier else messages
        owner = self.owner
        data = frame(BATCH, batch_to_pb(owner.cluster_id(), owner.node_id, messages).SerializeToString())
        sent = owner.sent_bytes
        sent[self.peer_id] = sent.get(self.peer_id, 0) + len(data) - 5
        if not self.paused:
            write_now(protocol.transport, data)
        elif self.pending_bytes + len(data) <= self.settings.max_pending_bytes:
            self.pending.append((data, messages))
            self.pending_bytes += len(data)
        else:
            owner._unreachable(self.peer_id)
            return [*earlier, *messages] if earlier else messages
        return earlier or ()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._dial()

    def stop(self) -> None:
        self._running = False
        self._cancel_timer()
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _dial(self) -> None:
        factory = Factory.forProtocol(lambda: _Dialled(self))
        factory.noisy = False
        attempt = self._attempt = maybeDeferred(self._connect, self.address, factory)
        attempt.addErrback(self._dial_failed, attempt)

    def _dial_failed(self, failure: Failure, attempt: Deferred[Any]) -> None:
        if attempt is not self._attempt:
            return  # cancelled by stop
        self._attempt = None
        self._went_down(_why(failure))
        self._retry_later()

    def _retry_later(self) -> None:
        if not self._running:
            return
        delay = self._rng.uniform(self._backoff / 2, self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.backoff_max)
        self._set_timer(delay, self._dial)

    # -- the connection's side -----------------------------------------------------------

    def _made(self, protocol: _Dialled) -> None:
        self._attempt = None
        if not self._running:
            protocol.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._protocol = protocol
        self.paused = False
        self._last_heard = self._clock.seconds()
        protocol.transport.write(hello_frame(self.owner.cluster_id(), self.owner.node_id, self.peer_id))  # type: ignore[union-attr]
        self._set_timer(self.settings.handshake_timeout, self._handshake_late)

    def _handshake_late(self) -> None:
        if self._protocol is not None and not self.ready:
            self._fail(self._protocol, f"no answer to our hello within {self.settings.handshake_timeout:g}s")

    def _heard(self, protocol: _Dialled, kind: bytes, body: bytes) -> bool:
        """Take one frame from the peer; False if the connection was dropped."""
        if protocol is not self._protocol:
            return False
        self._last_heard = self._clock.seconds()
        if kind == PONG and self.ready:
            return True
        if kind == HELLO and not self.ready:
            try:
                answer = raft_pb2.PeerHello.FromString(body)
            except DecodeError:
                self._fail(protocol, "it answered our hello with a malformed one")
                return False
            refusal = answer_refusal(answer, cluster_id=self.owner.cluster_id(), peer_id=self.peer_id)
            if refusal:
                self._refused(refusal)
                self._fail(protocol, refusal, quiet=True)
                return False
            self._up()
            return True
        self._fail(protocol, f"it sent an unexpected frame of kind {kind!r}")
        return False

    def _up(self) -> None:
        self.ready = True
        self._backoff = self.settings.backoff_min
        self._refusal_logged = ""
        if self._down_logged:
            log.info("peer {peer} at {address} is reachable again", peer=self.peer_id, address=self.address)
            self._down_logged = False
        self._set_timer(self.settings.ping_interval, self._ping)

    def _ping(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        silent = self._clock.seconds() - self._last_heard
        if silent > self.settings.dead_after:
            self._fail(protocol, f"no answer for {silent:.1f}s")
            return
        if not self.paused:
            protocol.transport.write(_PING)  # type: ignore[union-attr]
        self._set_timer(self.settings.ping_interval, self._ping)

    def _resume(self) -> None:
        self.paused = False
        protocol = self._protocol
        while self.pending and not self.paused and protocol is not None:
            data, _ = self.pending.popleft()
            self.pending_bytes -= len(data)
            protocol.transport.write(data)  # type: ignore[union-attr]

    def _fail(self, protocol: _Dialled, reason: str, quiet: bool = False) -> None:
        """Drop the connection now (its loss then schedules the retry)."""
        if protocol is self._protocol and not quiet:
            self._went_down(reason)
        if protocol.transport is not None:
            protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _lost(self, protocol: _Dialled, reason: Failure | None) -> None:
        if protocol is not self._protocol:
            return
        was_up = self.ready or bool(self.pending)
        self._protocol = None
        self.ready = False
        self.paused = False
        if self._running:
            for _, held in self.pending:
                self._unsent.extend(held)
        self.pending.clear()
        self.pending_bytes = 0
        self._cancel_timer()
        if not self._running:
            return  # stopped: nothing to report or retry
        if was_up:
            self.owner._unreachable(self.peer_id)
        self._went_down(_why(reason) if reason is not None else "closed")
        self._retry_later()

    def _went_down(self, reason: str) -> None:
        if not self._down_logged and not self._refusal_logged:
            log.info(
                "peer {peer} at {address} is unreachable ({reason}); retrying quietly",
                peer=self.peer_id,
                address=self.address,
                reason=reason,
            )
            self._down_logged = True

    def _refused(self, reason: str) -> None:
        if reason != self._refusal_logged:
            log.warn(
                "peer {peer} at {address}: {reason}; retrying quietly",
                peer=self.peer_id,
                address=self.address,
                reason=reason,
            )
            self._refusal_logged = reason
            self._down_logged = True

    # -- timers -------------------------------------------------------------------------

    def _set_timer(self, delay: float, call: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._clock.callLater(delay, call)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _why(failure: Failure | None) -> str:
    """Why a connection failed or ended, in a few words, for the one log line."""
    if failure is None:
        return "closed"
    value = failure.value
    text = str(value).strip().rstrip(".")
    name = type(value).__name__
    return f"{name}: {text}" if text and len(text) < 120 else name
