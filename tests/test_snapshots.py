"""Snapshot transfer over real gRPC and over the native peer protocol:
staged, verified, resumable, refused when corrupt or while an earlier
snapshot awaits its install."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from dkv.raft.messages import InstallSnapshot, SnapshotMeta
from dkv.storage import WriteBatch
from dkv.transport.snapshots import OutgoingSnapshot, SnapshotReceiver, send_snapshot
from tests.test_storage import MEMBERS, applied, open_lmdb, put_entry, value


def run(coro) -> Deferred:
    return Deferred.fromFuture(asyncio.ensure_future(coro))


@pytest_twisted.async_yield_fixture(params=["grpc", "twisted"])
async def pair(tmp_path, request):
    """A source store with 3000 keys and a receiving node (store + gRPC
    server or peer port), and send(cluster_id, from, term, snap) to it."""
    from twisted.internet import reactor

    from dkv.grpc_server import GrpcServerService
    from dkv.transport import peer_snapshots
    from dkv.transport.grpc_peer import GrpcTransport
    from dkv.transport.twisted_peer import TwistedTransport

    source = open_lmdb(str(tmp_path / "source.db"))
    source.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i + 2, b"key-%05d" % i, b"value-%d" % i * 20) for i in range(3000))
    await source.write(WriteBatch(None, entries, applied(source, entries)))
    target = open_lmdb(str(tmp_path / "target.db"))
    target.bootstrap("cid", MEMBERS)
    delivered: list = []
    state = {"busy": False}
    transport = GrpcTransport("b", lambda: "cid", delivered.extend, lambda peer: None)
    transport.snapshot_receiver = SnapshotReceiver(
        "b", lambda: "cid", lambda: target, delivered.extend, busy=lambda: state["busy"]
    )
    if request.param == "grpc":
        server = GrpcServerService("127.0.0.1", 0, [transport.register], 1 << 20)
        server.startService()

        def send(cluster_id, frm, term, snap):
            return send_snapshot(f"127.0.0.1:{server.port}", cluster_id, frm, term, snap)

        stop = server.stopService
    else:
        native = TwistedTransport("b", lambda: "cid", delivered.extend, lambda peer: None, reactor=reactor)
        native.snapshot_receiver = transport.snapshot_receiver
        port = reactor.listenTCP(0, native.listener, interface="127.0.0.1")
        dialler = TwistedTransport("a", lambda: "cid", lambda msgs: None, lambda peer: None, reactor=reactor)

        def send(cluster_id, frm, term, snap):
            address = f"127.0.0.1:{port.getHost().port}"
            return peer_snapshots.send_snapshot(dialler._connect, address, cluster_id, frm, "b", term, snap)

        stop = port.stopListening
    try:
        yield source, target, send, delivered, state
    finally:
        await stop()
        await source.close()
        await target.close()


def outgoing(source, chunk_bytes: int = 8192) -> OutgoingSnapshot:
    reader = source.snapshot_reader(chunk_bytes)
    return OutgoingSnapshot(reader, SnapshotMeta(reader.index, 2, MEMBERS))


@pytest_twisted.ensureDeferred
async def test_snapshot_is_staged_verified_and_installs(pair) -> None:
    source, target, send, delivered, _ = pair
    snap = outgoing(source)
    await run(send("cid", "a", 5, snap))
    assert delivered == [InstallSnapshot(frm="a", to="b", term=5, meta=snap.meta)]
    await target.write(WriteBatch(install=snap.meta))
    assert value(target, b"key-02999") == b"value-2999" * 20
    assert target.load().snapshot_index == snap.meta.index == 3001
    snap.reader.close()


@pytest_twisted.ensureDeferred
async def test_interrupted_transfer_resumes_from_the_last_staged_chunk(pair, monkeypatch) -> None:
    source, target, send, delivered, _ = pair
    snap = outgoing(source)
    original = OutgoingSnapshot.chunk
    sent: list[int] = []

    async def failing_chunk(self, seq):
        if seq == 5 and not sent.count(-1):
            sent.append(-1)
            raise ConnectionError("link dropped")
        sent.append(seq)
        return await original(self, seq)

    monkeypatch.setattr(OutgoingSnapshot, "chunk", failing_chunk)
    with pytest.raises(ConnectionError):
        await run(send("cid", "a", 5, snap))
    assert delivered == []
    await run(send("cid", "a", 5, snap))
    assert sent[:6] == [0, 1, 2, 3, 4, -1]
    assert sent[6] == 5, "the second transfer resumes where the first stopped"
    assert len(delivered) == 1
    snap.reader.close()


@pytest_twisted.ensureDeferred
async def test_a_corrupt_chunk_is_refused(pair, monkeypatch) -> None:
    source, target, send, delivered, _ = pair
    snap = outgoing(source)
    original = OutgoingSnapshot.chunk

    async def corrupt(self, seq):
        records, crc, last = await original(self, seq)
        if seq == 2:
            records = [(k, v + b"!") for k, v in records]
        return records, crc, last

    monkeypatch.setattr(OutgoingSnapshot, "chunk", corrupt)
    with pytest.raises(RuntimeError, match="CRC"):
        await run(send("cid", "a", 5, snap))
    assert delivered == []
    snap.reader.close()


@pytest_twisted.ensureDeferred
async def test_refused_while_an_earlier_snapshot_awaits_install(pair) -> None:
    source, target, send, delivered, state = pair
    state["busy"] = True
    snap = outgoing(source)
    with pytest.raises(RuntimeError, match="installing an earlier snapshot"):
        await run(send("cid", "a", 5, snap))
    snap.reader.close()


@pytest_twisted.ensureDeferred
async def test_wrong_cluster_is_refused(pair) -> None:
    source, target, send, delivered, _ = pair
    snap = outgoing(source)
    with pytest.raises(RuntimeError, match="wrong cluster|belongs to cluster"):
        await run(send("other", "a", 5, snap))
    snap.reader.close()


@pytest_twisted.ensureDeferred
async def test_a_full_disk_refuses_the_snapshot_with_a_reason_and_a_retry_resumes(pair) -> None:
    """Staging a chunk fails with ENOSPC: the sender is told why (it tries
    again later), the chunks staged before stay, and once space is freed the
    transfer resumes and completes."""
    from dkv.storage.disk_faults import enospc

    source, target, send, delivered, _ = pair
    snap = outgoing(source)
    commits = [0]

    def fill_after_three_commits() -> None:
        commits[0] += 1
        if commits[0] > 3:
            raise enospc()

    target.fault_hook = fill_after_three_commits
    with pytest.raises(RuntimeError, match="the disk is full"):
        await run(send("cid", "a", 5, snap))
    assert delivered == []
    target.fault_hook = None
    await run(send("cid", "a", 5, snap))
    assert len(delivered) == 1
    snap.reader.close()
