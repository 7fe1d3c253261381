"""LmdbStore and MemoryStore honour the NodeStore contract; LMDB survives reopen."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.commands import RequestId, encode_delete, encode_put
from dkv.mvcc import MvccView
from dkv.pb.etcd_rpc_pb2 import RangeRequest
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Entry, EntryKind, HardState
from dkv.statemachine import apply_entries
from dkv.storage import StorageError, WriteBatch
from dkv.storage.memory import MemoryStore
from dkv.storage.overlay import Overlay


def applied(store, entries):
    """The store-level effect of committed entries applied on store's state."""
    with store.reading() as tables:
        return apply_entries(entries, Overlay().writer(tables)).applied


def value(store, key: bytes) -> bytes | None:
    """The value of key in store's state (etcd's Range of that key)."""
    with store.reading() as tables:
        kvs = MvccView(tables).range(RangeRequest(key=key)).kvs
    return kvs[0].value if kvs else None


MEMBERS = Membership((Member("a", "127.0.0.1:7070"), Member("b", "127.0.0.1:8080")))


def put_entry(index: int, key: bytes, value: bytes, term: int = 2, seq: int | None = None) -> Entry:
    return Entry(index, term, EntryKind.NORMAL, encode_put(RequestId(7, seq or index), key, value))


def delete_entry(index: int, key: bytes, term: int = 2) -> Entry:
    return Entry(index, term, EntryKind.NORMAL, encode_delete(RequestId(7, index), key))


def open_lmdb(path: str):
    from twisted.internet import reactor

    from dkv.storage.lmdb_store import LmdbStore

    return LmdbStore.open(path, reactor)


@pytest_twisted.async_yield_fixture(params=["lmdb", "memory"])
async def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else open_lmdb(str(tmp_path / "n.db"))
    yield s
    await s.close()


def test_empty_store_loads_none(store) -> None:
    assert store.load() is None


def test_bootstrap_writes_committed_config(store) -> None:
    state = store.bootstrap("cid", MEMBERS)
    assert state.hard_state == HardState(1, "", 1)
    loaded = store.load()
    assert loaded.cluster_id == "cid"
    assert loaded.hard_state == HardState(1, "", 1)
    assert loaded.entries == (Entry(1, 1, EntryKind.CONFIG, MEMBERS.encode()),)
    assert loaded.applied == 0


@pytest_twisted.ensureDeferred
async def test_put_get_delete_through_apply(store) -> None:
    store.bootstrap("cid", MEMBERS)
    entries = (put_entry(2, b"k", b"v1"), put_entry(3, b"k2", b"v2"), delete_entry(4, b"k2"))
    await store.write(WriteBatch(HardState(2, "a", 4), entries, applied(store, entries)))
    assert value(store, b"k") == b"v1"
    assert value(store, b"k2") is None
    loaded = store.load()
    assert loaded.applied == 4
    assert loaded.hard_state == HardState(2, "a", 4)
    assert [e.index for e in loaded.entries] == [1, 2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_entries_replace_conflicting_suffix(store) -> None:
    store.bootstrap("cid", MEMBERS)
    await store.write(WriteBatch(None, tuple(put_entry(i, b"k", b"%d" % i) for i in range(2, 8))))
    await store.write(WriteBatch(None, tuple(put_entry(i, b"k", b"x", term=3) for i in (4, 5))))
    loaded = store.load()
    assert [(e.index, e.term) for e in loaded.entries] == [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)]


@pytest_twisted.ensureDeferred
async def test_config_entries_and_noops_change_no_key(store) -> None:
    store.bootstrap("cid", MEMBERS)
    entries = (Entry(2, 2, EntryKind.NORMAL, b""), Entry(3, 2, EntryKind.CONFIG, MEMBERS.encode()))
    assert applied(store, entries).writes == ()
    await store.write(WriteBatch(None, entries, applied(store, entries)))
    assert store.load().applied == 3


@pytest_twisted.ensureDeferred
async def test_many_writes_in_one_batch(store) -> None:
    store.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i, b"key-%d" % i, b"value-%d" % i) for i in range(2, 5002))
    await store.write(WriteBatch(HardState(2, "", 5001), entries, applied(store, entries)))
    assert value(store, b"key-4999") == b"value-4999"
    assert store.load().applied == 5001


@pytest_twisted.ensureDeferred
async def test_writes_complete_in_call_order(store) -> None:
    store.bootstrap("cid", MEMBERS)
    order: list[int] = []
    ds = []
    for i in range(2, 12):
        e = put_entry(i, b"k", b"%d" % i)
        d = store.write(WriteBatch(None, (e,), applied(store, (e,))))
        d.addCallback(lambda _, i=i: order.append(i))
        ds.append(d)
    await defer.gatherResults(ds)
    assert order == list(range(2, 12))
    assert value(store, b"k") == b"11"


@pytest_twisted.ensureDeferred
async def test_lmdb_transactions_run_off_the_reactor_thread(tmp_path) -> None:
    """A transaction (here: over a store whose log file could not be made)
    never blocks the reactor; log-only appends may (``test_log_file``)."""
    import threading

    from twisted.internet import reactor

    from dkv.storage.lmdb_store import LmdbStore

    s = LmdbStore.open(str(tmp_path / "n.db"), reactor, log_file_bytes=0)
    try:
        assert not s.log_apart
        s.bootstrap("cid", MEMBERS)
        seen: list[str] = []
        original = s._write_batch

        def spy(batch):
            seen.append(threading.current_thread().name)
            return original(batch)

        s._write_batch = spy
        d = s.write(WriteBatch(HardState(2, "", 1)))
        assert not d.called  # the reactor is not blocked waiting for fsync
        await d
        assert seen and seen[0] != threading.current_thread().name
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_lmdb_reopen_finds_everything(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    s = open_lmdb(path)
    s.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i, b"k%d" % i, b"v%d" % i) for i in range(2, 102))
    await s.write(WriteBatch(HardState(3, "b", 101), entries, applied(s, entries[:50])))
    await s.close()
    s = open_lmdb(path)
    try:
        loaded = s.load()
        assert loaded.hard_state == HardState(3, "b", 101)
        assert len(loaded.entries) == 101
        assert loaded.applied == 51
        assert value(s, b"k51") == b"v51"
        assert value(s, b"k52") is None  # written to the log, not yet applied
    finally:
        await s.close()


def acked_before_kill_9(path: str, loop: str, at: int = 300) -> int:
    """Run loop (Python, dedented) in a child process on a bootstrapped
    LmdbStore ``s`` at path (``WriteBatch``, ``HardState``, ``put_entry``
    and ``applied`` at hand); it prints the index of each write the store
    acknowledged. Kill it with SIGKILL once it printed at; the last index
    printed."""
    prelude = textwrap.dedent(
        f"""
        import sys
        from twisted.internet import reactor
        from dkv.storage.lmdb_store import LmdbStore
        from dkv.storage import WriteBatch
        from dkv.raft.messages import HardState
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from tests.test_storage import put_entry, MEMBERS, applied
        s = LmdbStore.open({path!r}, reactor)
        s.bootstrap("cid", MEMBERS)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(loop)], stdout=subprocess.PIPE, text=True)
    acked = 0
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            acked = int(line)
            if acked >= at:
                break
    finally:
        proc.kill()
        proc.wait()
    return acked


@pytest_twisted.ensureDeferred
async def test_lmdb_survives_kill_9(tmp_path) -> None:
    """A child process writes, reports each acknowledged write, and is
    killed with SIGKILL; every acknowledged write is there on reopen."""
    path = str(tmp_path / "n.db")
    acked = acked_before_kill_9(
        path,
        """
        for i in range(2, 100000):
            e = put_entry(i, b"k%d" % i, b"v%d" % i)
            s._write_batch(WriteBatch(None, (e,), applied(s, (e,))))
            print(i, flush=True)
        """,
    )
    s = open_lmdb(path)
    try:
        assert s.load().applied >= acked
        for i in range(2, acked + 1):
            assert value(s, b"k%d" % i) == b"v%d" % i
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_lmdb_refuses_second_process(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    s = open_lmdb(path)
    try:
        script = (
            "from twisted.internet import reactor\n"
            f"from dkv.storage.lmdb_store import LmdbStore\nLmdbStore.open({path!r}, reactor)"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert result.returncode != 0
        assert "in use by another process" in result.stderr
    finally:
        await s.close()


def test_lmdb_missing_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_lmdb(str(tmp_path / "nope" / "n.db"))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("size", [1, 510, 511, 512, 4096, 100_000])
async def test_keys_of_any_size(store, size) -> None:
    """LMDB keys stop at 511 bytes; the store maps longer ones (prefix + digest)."""
    store.bootstrap("cid", MEMBERS)
    key = bytes(i % 251 for i in range(size))
    sibling = key[:-1] + b"\xff"  # same long prefix, different key
    entries = (put_entry(2, key, b"v"), put_entry(3, sibling, b"w"))
    await store.write(WriteBatch(None, entries, applied(store, entries)))
    assert value(store, key) == b"v"
    assert value(store, sibling) == b"w"
    assert value(store, key + b"x") is None
    entries = (delete_entry(4, key),)
    await store.write(WriteBatch(None, entries, applied(store, entries)))
    assert value(store, key) is None
    assert value(store, sibling) == b"w"


# -- compaction and snapshots ----------------------------------------------------------

from dkv.raft.messages import SnapshotMeta  # noqa: E402
from dkv.storage import record_crc  # noqa: E402


@pytest_twisted.ensureDeferred
async def test_compaction_forgets_the_log_prefix_and_records_the_base(store) -> None:
    store.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i, b"k%d" % i, b"v") for i in range(2, 12))
    await store.write(WriteBatch(HardState(2, "", 11), entries, applied(store, entries)))
    await store.write(WriteBatch(compact=SnapshotMeta(7, 2, MEMBERS)))
    loaded = store.load()
    assert [e.index for e in loaded.entries] == [8, 9, 10, 11]
    assert (loaded.snapshot_index, loaded.snapshot_term, loaded.snapshot_membership) == (7, 2, MEMBERS)
    assert value(store, b"k5") == b"v"  # the state is the snapshot: nothing lost
    # An older compaction point changes nothing.
    await store.write(WriteBatch(compact=SnapshotMeta(3, 2, MEMBERS)))
    assert store.load().snapshot_index == 7


async def _fill(store, n: int) -> None:
    store.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i + 2, b"key-%05d" % i, b"value-%d" % i) for i in range(n))
    await store.write(WriteBatch(HardState(2, "", n + 1), entries, applied(store, entries)))


def read_all_chunks(reader) -> list[list[tuple[bytes, bytes]]]:
    chunks, seq = [], 0
    while True:
        records, last = reader.read(seq)
        chunks.append(records)
        seq += 1
        if last:
            return chunks


@pytest_twisted.ensureDeferred
async def test_snapshot_reader_is_a_consistent_view(store) -> None:
    await _fill(store, 2000)
    reader = store.snapshot_reader(chunk_bytes=4096)
    try:
        assert reader.index == 2001
        # Writes after the view was taken are not in it.
        e = put_entry(2002, b"zzz-late", b"x")
        await store.write(WriteBatch(None, (e,), applied(store, (e,))))
        chunks = read_all_chunks(reader)
        assert len(chunks) > 3
        records = [r for c in chunks for r in c]
        # Per key: its history, its index entry and its live entry; and the revision.
        assert len(records) == 3 * 2000 + 1
        assert records == sorted(records)
        assert not any(b"zzz-late" in k + v for k, v in records)
        # A chunk can be read again (a transfer resuming).
        assert reader.read(2)[0] == chunks[2]
    finally:
        reader.close()


@pytest_twisted.ensureDeferred
async def test_staged_snapshot_installs_in_one_write(tmp_path) -> None:
    source, target = open_lmdb(str(tmp_path / "s.db")), open_lmdb(str(tmp_path / "t.db"))
    try:
        await _fill(source, 500)
        target.bootstrap("cid", MEMBERS)
        old = (put_entry(2, b"old-key", b"old"),)
        await target.write(WriteBatch(HardState(2, "", 2), old, applied(target, old)))
        meta = SnapshotMeta(501, 2, MEMBERS)
        reader = source.snapshot_reader(chunk_bytes=2048)
        assert await target.stage_begin(meta) == 0
        seq, crc = 0, 0
        while True:
            records, last = reader.read(seq)
            crc = record_crc(records, crc)
            await target.stage_chunk(seq, records, crc, last)
            seq += 1
            if last:
                break
        assert value(target, b"key-00001") is None  # staged, not yet the state
        await target.write(WriteBatch(install=meta, hard_state=HardState(3, "", 501)))
        assert value(target, b"key-00001") == b"value-1"
        assert value(target, b"old-key") is None
        loaded = target.load()
        assert (loaded.applied, loaded.snapshot_index, loaded.entries) == (501, 501, ())
    finally:
        await target.close()
        await source.close()


@pytest_twisted.ensureDeferred
async def test_staging_resumes_and_checks_order_and_crc(store) -> None:
    store.bootstrap("cid", MEMBERS)
    meta = SnapshotMeta(10, 2, MEMBERS)
    chunk0 = [(b"\x00a", b"1"), (b"\x00b", b"2")]
    chunk1 = [(b"\x00c", b"3")]
    assert await store.stage_begin(meta) == 0
    await store.stage_chunk(0, chunk0, record_crc(chunk0), last=False)
    # The same snapshot again: resume after chunk 0.
    assert await store.stage_begin(meta) == 1
    with pytest.raises(StorageError, match="expected 1"):
        await store.stage_chunk(0, chunk0, record_crc(chunk0), last=False)
    with pytest.raises(StorageError, match="CRC"):
        await store.stage_chunk(1, chunk1, 12345, last=True)
    await store.stage_chunk(1, chunk1, record_crc(chunk1, record_crc(chunk0)), last=True)
    # A different snapshot starts over.
    assert await store.stage_begin(SnapshotMeta(11, 2, MEMBERS)) == 0
    with pytest.raises(StorageError):
        await store.write(WriteBatch(install=meta))


@pytest_twisted.ensureDeferred
async def test_initialize_a_joining_node(store) -> None:
    state = store.initialize("cid", MEMBERS)
    assert state.entries == () and state.snapshot_membership == MEMBERS
    loaded = store.load()
    assert loaded.cluster_id == "cid" and loaded.snapshot_membership == MEMBERS
    with pytest.raises(StorageError):
        store.bootstrap("cid", MEMBERS)
