# test-case-name: tests.test_snapshots
"""Sending and receiving snapshots (``dkv.raft.v0.Raft/InstallSnapshot``).

A snapshot is a consistent read transaction of the leader's applied state,
streamed in chunks of about 256 KiB and never held in memory whole. The
exchange on one bidirectional stream:

    leader: header (cluster id, leader, term, meta)
    follower: ack(next_seq)       0, or where an interrupted transfer of the
                                  same snapshot left off (chunks are durable)
    leader: chunk next_seq, next_seq+1, ... each with the running CRC-32
    follower: ack per chunk once it is durably staged (flow control);
              after the last chunk and its CRC check, ack(done) and the
              driver steps InstallSnapshot into its core, which decides.

Either side gives up on any error or after a quiet ``STALL_TIMEOUT``; the
leader's core then probes again and asks for another snapshot if needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import grpc
from grpc import aio

from dkv.aio import wait
from dkv.disk_full import is_disk_full
from dkv.logs import logger
from dkv.pb import raft_pb2, raft_pb2_grpc
from dkv.raft.membership import Membership
from dkv.raft.messages import InstallSnapshot, Message, SnapshotMeta
from dkv.storage import NodeStore, SnapshotReader, StorageError, record_crc
from dkv.transport.grpc_peer import open_channel

log = logger("dkv.snapshots")

#: Records per chunk, in bytes. Each chunk is a list of records, a protobuf
#: message and gRPC buffers on both sides at once, and what the allocators
#: take for that peak they keep (fragmented): with 1 MiB chunks a leader's
#: anonymous RSS rose 4.7 MiB at its first send of a ~10 MiB snapshot and
#: 6.1 MiB after four; with 256 KiB, 1.3 and 2.2 MiB. Each chunk costs the
#: receiver one durable commit, so they are not made smaller still.
CHUNK_BYTES = 1 << 18
STALL_TIMEOUT = 30.0


def meta_to_pb(meta: SnapshotMeta) -> raft_pb2.SnapshotMeta:
    return raft_pb2.SnapshotMeta(
        index=meta.index,
        term=meta.term,
        membership=raft_pb2.ClusterConfig.FromString(meta.membership.encode()),
    )


def meta_from_pb(pb: raft_pb2.SnapshotMeta) -> SnapshotMeta:
    return SnapshotMeta(pb.index, pb.term, Membership.decode(pb.membership.SerializeToString()))


@attrs.define
class OutgoingSnapshot:
    """One consistent view being sent, kept for retries: the CRC after each
    chunk produced so far lets a transfer resume at any of them."""

    reader: SnapshotReader
    meta: SnapshotMeta
    crcs: list[int] = attrs.Factory(list)

    async def chunk(self, seq: int) -> tuple[list[tuple[bytes, bytes]], int, bool]:
        loop = asyncio.get_running_loop()
        while len(self.crcs) < seq:  # produce the CRCs of chunks we skip
            records, _ = await loop.run_in_executor(None, self.reader.read, len(self.crcs))
            self.crcs.append(record_crc(records, self.crcs[-1] if self.crcs else 0))
        records, last = await loop.run_in_executor(None, self.reader.read, seq)
        crc = record_crc(records, self.crcs[seq - 1] if seq else 0)
        if len(self.crcs) == seq:
            self.crcs.append(crc)
        return records, crc, last


async def send_snapshot(
    address: str,
    cluster_id: str,
    node_id: str,
    term: int,
    snap: OutgoingSnapshot,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Stream snap to the node at address (over TLS with credentials);
    returns once it staged all of it and handed it to its core. Raises on
    any failure."""
    channel = open_channel(address, credentials)
    try:
        call = raft_pb2_grpc.RaftStub(channel).InstallSnapshot()
        header = raft_pb2.SnapshotChunk(cluster_id=cluster_id, leader_term=term, meta=meta_to_pb(snap.meta))
        setattr(header, "from", node_id)
        await call.write(header)
        ack = await asyncio.wait_for(call.read(), STALL_TIMEOUT)
        check_ack(ack)
        seq = ack.next_seq
        while True:
            records, crc, last = await snap.chunk(seq)
            await asyncio.wait_for(
                call.write(
                    raft_pb2.SnapshotChunk(
                        seq=seq,
                        records=[raft_pb2.Record(key=k, value=v) for k, v in records],
                        crc=crc,
                        last=last,
                    )
                ),
                STALL_TIMEOUT,
            )
            ack = await asyncio.wait_for(call.read(), STALL_TIMEOUT)
            check_ack(ack)
            if last:
                if not ack.done:
                    raise RuntimeError("the follower did not confirm the snapshot")
                await call.done_writing()
                return
            seq += 1
    finally:
        await channel.close(grace=None)


def check_ack(ack: Any) -> None:
    """Raise unless ack lets the transfer go on."""
    if ack is aio.EOF or ack is None:
        raise RuntimeError("the follower closed the snapshot stream")
    if ack.error:
        raise RuntimeError(f"the follower refused the snapshot: {ack.error}")


class SnapshotReceiver:
    """The follower's side. Only the newest transfer may stage: an older
    stream still open (say, one the leader already gave up on) stops."""

    def __init__(
        self,
        node_id: str,
        cluster_id: Callable[[], str],
        store: Callable[[], NodeStore],
        deliver: Callable[[list[Message]], None],
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._store = store
        self._deliver = deliver
        #: True while a staged snapshot awaits its install: do not restage.
        self._busy = busy
        self._generation = 0

    async def receive(self, requests: AsyncIterator[raft_pb2.SnapshotChunk]) -> AsyncIterator[raft_pb2.SnapshotAck]:
        self._generation += 1
        mine = self._generation
        header = await anext(requests, None)
        if header is None:
            return
        sender = getattr(header, "from")
        if header.cluster_id != self._cluster_id():
            yield raft_pb2.SnapshotAck(error=f"wrong cluster {header.cluster_id!r}")
            return
        if not header.HasField("meta"):
            yield raft_pb2.SnapshotAck(error="no snapshot meta in the first message")
            return
        meta = meta_from_pb(header.meta)
        if self._busy():
            yield raft_pb2.SnapshotAck(error="installing an earlier snapshot; try again")
            return
        store = self._store()
        try:
            next_seq = await wait(store.stage_begin(meta))
        except Exception as e:  # noqa: BLE001
            yield raft_pb2.SnapshotAck(error=_staging_failed(e, sender))
            return
        log.info(
            "receiving a snapshot at index {index} from {sender} (from chunk {seq})",
            index=meta.index,
            sender=sender,
            seq=next_seq,
        )
        yield raft_pb2.SnapshotAck(next_seq=next_seq)
        async for chunk in requests:
            if mine != self._generation:
                yield raft_pb2.SnapshotAck(error="a newer snapshot transfer started")
                return
            records = [(r.key, r.value) for r in chunk.records]
            try:
                await wait(store.stage_chunk(chunk.seq, records, chunk.crc, chunk.last))
            except Exception as e:  # noqa: BLE001
                yield raft_pb2.SnapshotAck(error=_staging_failed(e, sender))
                return
            if chunk.last:
                self._deliver(
                    [InstallSnapshot(frm=sender, to=self._node_id, term=header.leader_term, meta=meta)]
                )
                log.info("snapshot at index {index} staged and verified", index=meta.index)
                yield raft_pb2.SnapshotAck(next_seq=chunk.seq + 1, done=True)
                return
            yield raft_pb2.SnapshotAck(next_seq=chunk.seq + 1)


def _staging_failed(error: Exception, sender: str) -> str:
    """Why staging a snapshot failed, for the sender (which tries again
    later), logged in one line: the store refused it (``StorageError``) or
    the disk is full; anything else is a bug and raised."""
    if not isinstance(error, StorageError) and not is_disk_full(error):
        raise error
    reason = f"the disk is full ({error})" if is_disk_full(error) else str(error)
    log.warn("snapshot from {sender} rejected: {reason}", sender=sender, reason=reason)
    return reason
