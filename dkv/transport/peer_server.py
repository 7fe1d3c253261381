# test-case-name: tests.test_peer_transport,tests.test_hostile_peer
"""The listening side of the native peer protocol: the peer port.

Each accepted connection must say hello within ``handshake_timeout``; the
listener checks it (``dkv.transport.peer_handshake``; with peer TLS also
that the dialler's certificate was issued by the peer CA and names the host
of the member it says it is), answers, and then takes batches and answers
pings: the messages of the batches one read brings are handed to the node
in one call, so that what arrived together is stepped and stored together.
On a connection of its own it takes one snapshot transfer
(``dkv.transport.peer_snapshots``).

A connection that breaks the protocol is dropped at once, with one log
line per dialler host and reason (a refused or broken peer retries every
second): garbage or an oversize length, a malformed message, a batch from
another sender than the hello named, a second hello. So is one that stays
silent for ``idle_timeout`` (a half-open connection: a live dialler pings
every second), and one that does not read what the listener writes (its
pongs fill the socket's buffer for ``dead_after`` seconds). The node goes on
serving everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from OpenSSL import crypto
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from dkv.logs import logger
from dkv.pb import raft_pb2
from dkv.raft.messages import Message
from dkv.transport.peer_frames import BATCH, HELLO, PING, PONG, SNAPSHOT, FrameError, FrameReader, frame, no_delay
from dkv.transport.peer_handshake import hello_frame, hello_refusal
from dkv.transport.peer_link import PeerSettings
from dkv.transport.peer_snapshots import ReceivingSnapshot
from dkv.transport.snapshots import STALL_TIMEOUT
from dkv.write_now import write_now

__all__ = ["CertCheck", "PeerListenerFactory"]

log = logger("dkv.transport")

_PONG = frame(PONG)
_MAX_LOGGED = 1024

#: (the dialler's PEM certificate or None, the member id it claims) -> why it
#: is refused ("" if it is not); None: no peer TLS, nothing to check.
CertCheck = Callable[[bytes | None, str], str]


class PeerListenerFactory(Factory):
    """Builds one ``_Listened`` per accepted connection."""

    noisy = False

    def __init__(
        self, owner: Any, clock: Any, settings: PeerSettings, cert_check: Callable[[], CertCheck | None]
    ) -> None:
        self.owner = owner
        self.clock = clock
        self.settings = settings
        self.cert_check = cert_check
        self._logged: set[tuple[str, str]] = set()
        #: Connections open now (for tests and the metrics).
        self.open: set[_Listened] = set()

    def buildProtocol(self, addr: Any) -> _Listened:  # noqa: N802 - Twisted name
        return _Listened(self, getattr(addr, "host", "?"))

    def log_once(self, host: str, reason: str) -> None:
        key = (host, reason)
        if key in self._logged:
            return
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        log.warn("peer port: dropped a connection from {host}: {reason}", host=host, reason=reason)


@implementer(IPushProducer)
class _Listened(Protocol):
    """One dialler's connection to our peer port."""

    def __init__(self, factory: PeerListenerFactory, host: str) -> None:
        self.factory = factory
        self.host = host
        self.reader = FrameReader(factory.settings.max_frame)
        #: The member the hello named (None until a hello was accepted).
        self.sender: str | None = None
        self._timer: IDelayedCall | None = None
        self._last_heard = 0.0
        self._dropped = False
        #: Seconds of silence after which the connection is dropped.
        self._idle = factory.settings.idle_timeout
        self.snapshot: ReceivingSnapshot | None = None
        #: Fires while our send buffer stays full (see ``pauseProducing``).
        self._full: IDelayedCall | None = None
        #: The messages of the batch frames of one read, not yet handed over.
        self._inbox: list[Message] = []

    # -- Twisted ---------------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        self.factory.open.add(self)
        no_delay(self.transport)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        clock = self.factory.clock
        self._last_heard = clock.seconds()
        self._timer = clock.callLater(self.factory.settings.handshake_timeout, self._check_silence)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._dropped:
            return
        self._last_heard = self.factory.clock.seconds()
        try:
            frames = self.reader.feed(data)
        except FrameError as e:
            self._drop(f"it sent {e}")
            return
        # The batches of one read reach the node in one call, so that what
        # arrived together is stepped (and stored) together.
        try:
            for kind, body in frames:
                if not self._frame(kind, body):
                    break
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        inbox = self._inbox
        if inbox:
            self._inbox = []
            self.factory.owner._deliver(inbox)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.factory.open.discard(self)
        self._dropped = True
        if self.snapshot is not None:
            self.snapshot.close()
        for timer in (self._timer, self._full):
            if timer is not None and timer.active():
                timer.cancel()

    # -- the peer does not read: its pongs fill our send buffer ---------------------------------

    def pauseProducing(self) -> None:  # noqa: N802
        """Our send buffer is full (or TLS is buffering): drop the connection
        unless the dialler reads it within ``dead_after``."""
        if self._full is None or not self._full.active():
            self._full = self.factory.clock.callLater(self.factory.settings.dead_after, self._still_full)

    def resumeProducing(self) -> None:  # noqa: N802
        if self._full is not None and self._full.active():
            self._full.cancel()
        self._full = None

    def _still_full(self) -> None:
        self._full = None
        self._drop("it does not read what this node writes")

    def stopProducing(self) -> None:  # noqa: N802
        pass

    # -- the protocol ------------------------------------------------------------------------

    def _frame(self, kind: bytes, body: bytes) -> bool:
        if self.sender is None:
            if kind != HELLO:
                return self._drop(f"its first frame was of kind {kind!r}, not a hello")
            return self._hello(body)
        if kind == BATCH:
            try:
                batch = raft_pb2.Batch.FromString(body)
            except DecodeError:
                return self._drop("it sent a malformed Batch message")
            if getattr(batch, "from") != self.sender:
                return self._drop(f"a batch from {getattr(batch, 'from')!r} on {self.sender!r}'s connection")
            self._inbox.extend(self.factory.owner._messages(batch, len(body)))
            return True
        if kind == SNAPSHOT:
            self._hand_over()  # the messages before a chunk are stepped before it
            if self.snapshot is None:
                owner = self.factory.owner
                self.snapshot = ReceivingSnapshot(
                    owner.snapshot_receiver, self.sender, self._write, self._snapshot_done
                )
                self._idle = STALL_TIMEOUT  # the leader waits for each chunk to be staged
            reason = self.snapshot.take(body)
            return self._drop(reason) if reason else True
        if kind == PING:
            if self._full is None:  # nothing more while the dialler does not read
                self.transport.write(_PONG)  # type: ignore[union-attr]
            return not self._dropped
        return self._drop(f"it sent an unexpected frame of kind {kind!r}")

    def _hello(self, body: bytes) -> bool:
        owner = self.factory.owner
        try:
            hello = raft_pb2.PeerHello.FromString(body)
        except DecodeError:
            return self._drop("it sent a malformed PeerHello message")
        sender = getattr(hello, "from")
        refusal = hello_refusal(hello, cluster_id=owner.cluster_id(), node_id=owner.node_id)
        if not refusal:
            check = self.factory.cert_check()
            if check is not None:
                refusal = check(_peer_pem(self.transport), sender)
        if refusal:
            self.transport.write(hello_frame(owner.cluster_id(), owner.node_id, sender, error=refusal))  # type: ignore[union-attr]
            self.factory.log_once(self.host, f"refused node {sender!r}: {refusal}")
            self._dropped = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return False
        self.sender = sender
        self.transport.write(hello_frame(owner.cluster_id(), owner.node_id, sender))  # type: ignore[union-attr]
        self._rearm(self._idle)
        return True

    def _write(self, data: bytes) -> None:
        if not self._dropped:
            write_now(self.transport, data)

    def _snapshot_done(self, error: str) -> None:
        if error:
            self.factory.log_once(self.host, f"node {self.sender!r}: snapshot transfer ended: {error}")
        if not self._dropped:
            self._dropped = True
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _check_silence(self) -> None:
        settings = self.factory.settings
        if self.sender is None:
            self._drop(f"no hello within {settings.handshake_timeout:g}s")
            return
        silent = self.factory.clock.seconds() - self._last_heard
        if silent >= self._idle:
            self._drop(f"nothing heard for {silent:.0f}s")
        else:
            self._rearm(self._idle - silent)

    def _rearm(self, delay: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.factory.clock.callLater(delay, self._check_silence)

    def _drop(self, reason: str) -> bool:
        """Log once (per host and reason) and drop the connection; False."""
        if not self._dropped:
            self._dropped = True
            who = f"node {self.sender!r}" if self.sender else "a dialler"
            self.factory.log_once(self.host, f"{who}: {reason}")
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        return False


def _peer_pem(transport: Any) -> bytes | None:
    """The dialler's certificate (PEM), from Twisted's TLS transport."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    return crypto.dump_certificate(crypto.FILETYPE_PEM, cert) if cert is not None else None
