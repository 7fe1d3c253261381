# test-case-name: tests.test_transport
"""Raft messages between nodes over gRPC (``dkv.raft.v0.Raft/Stream``).

Each node keeps one client-streaming call open to every peer and writes
batches of messages into it; the receiver answers on its own stream back.
Messages are fire-and-forget, as Raft expects: when a link breaks, queued
messages are dropped, the core is told the peer is unreachable (it goes back
to probing), and the link reconnects with capped exponential backoff. A link
logs once when it goes down and once when it comes back, never per retry.

All of this runs on the asyncio loop that also runs Twisted's reactor.

For the metrics (``dkv.metrics``) the transport counts the bytes of the
batches it sends to and receives from each peer, and times the round trip
of a heartbeat to each peer (sent -> its answer received; a heartbeat whose
answer does not come within a second is forgotten).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from dkv.logs import logger
from dkv.pb import raft_pb2, raft_pb2_grpc
from dkv.raft.messages import Message
from dkv.transport.codec import batch_to_pb
from dkv.transport.peer_common import PeerAccounting
from dkv.transport.peer_queue import PeerQueue

#: gRPC channel/server options shared by peers (large appends, keepalive).
MAX_MESSAGE_BYTES = 64 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    # Without this a blackholed link (a silent partition) went unnoticed for
    # about a minute with grpcio 1.85; with it a write fails after ~4 s.
    ("grpc.http2.ping_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
#: Messages, and bytes of them, queued for a peer whose stream does not
#: drain; beyond either the oldest are dropped (Raft retransmits what
#: matters: ``dkv.transport.peer_queue``).
MAX_QUEUED = 4096
MAX_QUEUED_BYTES = 32 << 20
MAX_BATCH = 512
CONNECT_TIMEOUT = 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0

log = logger("dkv.transport")

#: Makes the credentials a new channel to a peer is opened with (None: plaintext).
Credentials = Callable[[], "grpc.ChannelCredentials | None"]


def open_channel(address: str, credentials: grpc.ChannelCredentials | None) -> aio.Channel:
    """A channel to a peer's RPC port: TLS with credentials (gRPC checks
    that the server's certificate names address's host), else plaintext."""
    if credentials is None:
        return aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


class PeerGuard(Protocol):
    """Who may call the peer protocol (``dkv.tls.peer_guard.PeerGuard``)."""

    async def admit(
        self, context: aio.ServicerContext, method: str, *, member_id: str | None = None, address: str | None = None
    ) -> None: ...


class _PeerLink:
    """The stream to one peer, with its queue and reconnect loop."""

    def __init__(self, transport: GrpcTransport, peer_id: str, address: str) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.address = address
        self.queue = PeerQueue(MAX_QUEUED, transport.max_queue_bytes)
        self.wakeup = asyncio.Event()
        self.connected = False
        self.down_logged = False
        self.task: asyncio.Task[None] | None = None
        #: Messages still queued when a stream ended, never written:
        #: returned by the next ``enqueue``.
        self.unsent: list[Message] = []

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def enqueue(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Queue messages for the stream; returns those dropped unsent (all
        of them when the stream is not up; the oldest queued ones when the
        queue passes its bounds), after those an ended stream left queued."""
        earlier = self.unsent
        if earlier:
            self.unsent = []
        if not self.connected:
            # Nothing would carry them; the core retransmits what matters,
            # and the driver retries the forwards among them (returned).
            self.transport._unreachable(self.peer_id)
            return [*earlier, *messages] if earlier else messages
        dropped = self.queue.push(messages)
        if dropped:
            # The peer does not keep up: the core probes it again.
            self.transport._unreachable(self.peer_id)
        self.wakeup.set()
        return [*earlier, *dropped] if earlier else dropped

    def ended(self) -> None:
        """The stream is down: what is still queued was never written, and
        the next ``enqueue`` returns it (a forward among it is proposed again)."""
        self.connected = False
        self.unsent.extend(self.queue.clear())

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            channel = open_channel(self.address, self.transport.channel_credentials())
            call: aio.StreamUnaryCall | None = None
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
                call = raft_pb2_grpc.RaftStub(channel).Stream()
                self.connected = True
                backoff = BACKOFF_MIN
                if self.down_logged:
                    log.info("peer {peer} at {address} is reachable again", peer=self.peer_id, address=self.address)
                    self.down_logged = False
                await self._pump(call)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure means the link is down
                self._went_down(await _reason(e, call))
            finally:
                self.ended()
                await channel.close(grace=None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _pump(self, call: aio.StreamUnaryCall) -> None:
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch = self.queue.pop_batch(MAX_BATCH)
            message = batch_to_pb(self.transport.cluster_id(), self.transport.node_id, batch)
            sent = self.transport.sent_bytes
            sent[self.peer_id] = sent.get(self.peer_id, 0) + message.ByteSize()
            await call.write(message)

    def _went_down(self, reason: str) -> None:
        if self.queue or self.connected:
            self.transport._unreachable(self.peer_id)
        if not self.down_logged:
            log.info(
                "peer {peer} at {address} is unreachable ({reason}); retrying quietly",
                peer=self.peer_id,
                address=self.address,
                reason=reason,
            )
            self.down_logged = True


async def _reason(error: Exception, call: aio.StreamUnaryCall | None) -> str:
    """Why a link failed, in a word, for the one log line."""
    if isinstance(error, aio.AioRpcError):
        return error.code().name
    if call is not None and call.done():
        # gRPC refuses writes once the call ended; the call's status says why.
        with contextlib.suppress(Exception):
            return (await call.code()).name
    if isinstance(error, asyncio.TimeoutError):
        return "connect timeout"
    return type(error).__name__


async def _parsed(
    raw: Any, message_type: Any, method: str, context: aio.ServicerContext, on_size: Callable[[int], None] | None = None
) -> Any:
    """The messages of a request stream of raw bytes, parsed as message_type.

    A message that does not parse ends the call with INVALID_ARGUMENT, logged
    once (gRPC's own deserializer would answer UNKNOWN, unlogged); the
    messages before it have been handed on already, as they would have been
    on a stream that broke there."""
    async for data in raw:
        if on_size is not None:
            on_size(len(data))
        try:
            yield message_type.FromString(data)
        except DecodeError:
            name = message_type.DESCRIPTOR.name
            log.warn(
                "rejected Raft {method} from {peer}: malformed {name} message",
                method=method,
                peer=context.peer(),
                name=name,
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name} message")


class RaftServicer(raft_pb2_grpc.RaftServicer):
    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    async def Stream(self, request_iterator, context):  # noqa: N802 - gRPC name
        guard = self._transport.guard
        admitted = None
        if guard is not None:
            await guard.admit(context, "Raft/Stream")
        sizes = [0]
        async for batch in _parsed(request_iterator, raft_pb2.Batch, "Stream", context, sizes.append):
            sender = getattr(batch, "from")
            if guard is not None and sender != admitted:
                await guard.admit(context, "Raft/Stream", member_id=sender)
                admitted = sender
            self._transport._receive(batch, sizes.pop())
        return raft_pb2.StreamClosed()

    async def InstallSnapshot(self, request_iterator, context):  # noqa: N802
        receiver = self._transport.snapshot_receiver
        if receiver is None:
            yield raft_pb2.SnapshotAck(error="this node does not take snapshots")
            return
        guard = self._transport.guard
        chunks = _parsed(request_iterator, raft_pb2.SnapshotChunk, "InstallSnapshot", context)
        if guard is not None:
            await guard.admit(context, "Raft/InstallSnapshot")
            header = await anext(chunks, None)
            if header is None:
                return
            await guard.admit(context, "Raft/InstallSnapshot", member_id=getattr(header, "from"))
            chunks = _prepend(header, chunks)
        async for ack in receiver.receive(chunks):
            yield ack


async def _prepend(first: Any, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


class GrpcTransport(PeerAccounting):
    """Sends the core's messages to peers and hands received ones to on_receive.

    ``cluster_id`` is a callable because a joining node learns it late;
    batches from another cluster are dropped (and logged once per sender)."""

    def __init__(
        self,
        node_id: str,
        cluster_id: Callable[[], str],
        on_receive: Callable[[list[Message]], None],
        on_unreachable: Callable[[str], None],
        routes: Mapping[str, str] | None = None,
        on_round_trip: Callable[[str, float], None] = lambda peer, seconds: None,
        channel_credentials: Credentials = lambda: None,
        guard: PeerGuard | None = None,
        max_queue_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        """on_round_trip(peer, seconds): a heartbeat's round trip;
        max_queue_bytes: the bytes of messages queued for one peer
        (``--max-peer-queue-bytes``)."""
        self.init_accounting(node_id, cluster_id, on_receive, on_unreachable, on_round_trip)
        self.max_queue_bytes = max_queue_bytes
        #: What links are opened with (see ``open_channel``), asked at each (re)connect.
        self.channel_credentials = channel_credentials
        #: Checks callers of the Raft service (None: anyone may call).
        self.guard = guard
        #: Every member's configured address, by id (our own included).
        self.members: dict[str, str] = {}
        #: Dial these peers here instead of at their configured address.
        self.routes = dict(routes or {})
        self._links: dict[str, _PeerLink] = {}
        self.servicer = RaftServicer(self)
        #: Takes InstallSnapshot streams (dkv.transport.snapshots.SnapshotReceiver).
        self.snapshot_receiver: Any = None
        self._running = False

    def register(self, server: aio.Server) -> None:
        """Serve ``dkv.raft.v0.Raft`` on server; requests arrive as raw bytes
        and are parsed by the servicer (see ``_parsed``)."""
        service = raft_pb2.DESCRIPTOR.services_by_name["Raft"]
        handlers = {
            "Stream": grpc.stream_unary_rpc_method_handler(
                self.servicer.Stream, response_serializer=raft_pb2.StreamClosed.SerializeToString
            ),
            "InstallSnapshot": grpc.stream_stream_rpc_method_handler(
                self.servicer.InstallSnapshot, response_serializer=raft_pb2.SnapshotAck.SerializeToString
            ),
        }
        assert set(handlers) == set(service.methods_by_name), "a Raft method has no handler"
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)

    def start(self) -> None:
        self._running = True
        for link in self._links.values():
            link.start()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*(link.stop() for link in self._links.values()))

    def set_peers(self, addresses: Mapping[str, str]) -> None:
        """Make the set of links match addresses (our own id excluded)."""
        self.members = dict(addresses)
        wanted = {i: self.routes.get(i, a) for i, a in addresses.items() if i != self.node_id}
        for peer_id in list(self._links):
            link = self._links[peer_id]
            if wanted.get(peer_id) != link.address:
                del self._links[peer_id]
                asyncio.ensure_future(link.stop())
        for peer_id, address in wanted.items():
            if peer_id not in self._links:
                link = _PeerLink(self, peer_id, address)
                self._links[peer_id] = link
                if self._running:
                    link.start()

    def member_address(self, node_id: str) -> str | None:
        """node_id's address in the configuration (not its route)."""
        return self.members.get(node_id)

    def address_of(self, peer_id: str) -> str | None:
        """Where we dial peer_id (its route if one is set)."""
        link = self._links.get(peer_id)
        return link.address if link is not None else self.routes.get(peer_id)
