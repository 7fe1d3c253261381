# test-case-name: tests.test_snapshots,tests.test_peer_transport_process
"""Snapshots over the native peer protocol (``--peer-transport twisted``).

A transfer takes a connection of its own to the follower's peer port: the
same hello as a link (cluster id, version, both ends, peer TLS), then the
exchange of ``dkv.transport.snapshots`` in frames: the leader sends
``SNAPSHOT`` frames (the header, then chunks with the running CRC-32), the
follower answers each with an ``ACK`` frame once it has durably staged it,
so one chunk (about 1 MiB) is in flight at a time. Resuming, CRC checks and
the follower's decisions are ``SnapshotReceiver``'s, as over gRPC; either
side gives up after ``STALL_TIMEOUT`` quiet seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from dkv.aio import wait
from dkv.pb import raft_pb2
from dkv.transport.peer_frames import ACK, HELLO, SNAPSHOT, FrameError, FrameReader, frame, no_delay
from dkv.transport.peer_handshake import answer_refusal, hello_frame
from dkv.transport.peer_link import Connect
from dkv.transport.snapshots import STALL_TIMEOUT, OutgoingSnapshot, check_ack, meta_to_pb

__all__ = ["ReceivingSnapshot", "send_snapshot"]


class _Dialled(Protocol):
    """The leader's end: frames from the follower go to a queue (None: closed)."""

    def __init__(self, hello: bytes) -> None:
        self.hello = hello
        self.frames: asyncio.Queue[tuple[bytes, bytes] | None] = asyncio.Queue()
        self.reader = FrameReader()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted name
        no_delay(self.transport)
        self.transport.write(self.hello)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            for item in self.reader.feed(data):
                self.frames.put_nowait(item)
        except FrameError:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.frames.put_nowait(None)

    async def next(self, kind: bytes) -> bytes:
        item = await asyncio.wait_for(self.frames.get(), STALL_TIMEOUT)
        if item is None:
            raise RuntimeError("the follower closed the snapshot connection")
        if item[0] != kind:
            raise RuntimeError(f"the follower sent a frame of kind {item[0]!r}, not {kind!r}")
        return item[1]


async def send_snapshot(
    connect: Connect, address: str, cluster_id: str, node_id: str, peer_id: str, term: int, snap: OutgoingSnapshot
) -> None:
    """Stream snap to peer_id's peer port at address; returns once the
    follower staged all of it and handed it to its core. Raises on any
    failure."""
    protocol = _Dialled(hello_frame(cluster_id, node_id, peer_id))
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False
    await wait(connect(address, factory))
    try:
        answer = raft_pb2.PeerHello.FromString(await protocol.next(HELLO))
        refusal = answer_refusal(answer, cluster_id=cluster_id, peer_id=peer_id)
        if refusal:
            raise RuntimeError(refusal)
        header = raft_pb2.SnapshotChunk(cluster_id=cluster_id, leader_term=term, meta=meta_to_pb(snap.meta))
        setattr(header, "from", node_id)
        protocol.transport.write(frame(SNAPSHOT, header.SerializeToString()))  # type: ignore[union-attr]
        ack = raft_pb2.SnapshotAck.FromString(await protocol.next(ACK))
        check_ack(ack)
        seq = ack.next_seq
        while True:
            records, crc, last = await snap.chunk(seq)
            chunk = raft_pb2.SnapshotChunk(
                seq=seq, records=[raft_pb2.Record(key=k, value=v) for k, v in records], crc=crc, last=last
            )
            protocol.transport.write(frame(SNAPSHOT, chunk.SerializeToString()))  # type: ignore[union-attr]
            ack = raft_pb2.SnapshotAck.FromString(await protocol.next(ACK))
            check_ack(ack)
            if last:
                if not ack.done:
                    raise RuntimeError("the follower did not confirm the snapshot")
                return
            seq += 1
    finally:
        if protocol.transport is not None:
            protocol.transport.loseConnection()


class ReceivingSnapshot:
    """The follower's end of one transfer, fed by the listener's connection:
    ``take`` each ``SNAPSHOT`` frame; acks go out through write; ``close``
    when the connection ends. Runs ``SnapshotReceiver.receive`` as a task."""

    def __init__(self, receiver: Any, sender: str, write: Callable[[bytes], None], done: Callable[[str], None]) -> None:
        """done(error) when the transfer ended ("" if it ran to its end)."""
        self._sender = sender
        self._write = write
        self._done = done
        self._chunks: asyncio.Queue[raft_pb2.SnapshotChunk | None] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run(receiver))

    def take(self, body: bytes) -> str:
        """Queue one chunk; the reason it cannot be ("" if it can)."""
        try:
            chunk = raft_pb2.SnapshotChunk.FromString(body)
        except DecodeError:
            return "it sent a malformed SnapshotChunk message"
        if getattr(chunk, "from") not in ("", self._sender):
            return f"a snapshot from {getattr(chunk, 'from')!r} on {self._sender!r}'s connection"
        self._chunks.put_nowait(chunk)
        return ""

    def close(self) -> None:
        self._chunks.put_nowait(None)

    async def _chunks_in(self) -> AsyncIterator[raft_pb2.SnapshotChunk]:
        while True:
            chunk = await asyncio.wait_for(self._chunks.get(), STALL_TIMEOUT)
            if chunk is None:
                return
            yield chunk

    async def _run(self, receiver: Any) -> None:
        error = ""
        try:
            if receiver is None:
                ack = raft_pb2.SnapshotAck(error="this node does not take snapshots")
                self._write(frame(ACK, ack.SerializeToString()))
                return
            async for ack in receiver.receive(self._chunks_in()):
                self._write(frame(ACK, ack.SerializeToString()))
                error = ack.error
        except Exception as e:  # noqa: BLE001 - a transfer that breaks ends here; the leader retries
            error = f"{type(e).__name__}: {e}"
        finally:
            self._done(error)
