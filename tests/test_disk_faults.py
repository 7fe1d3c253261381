"""A failing disk (dkv.storage.disk_faults, dkv.storage.lmdb_store).

A commit that fails with EIO is never retried: the store refuses every later
write, the driver stops the node with one line, and reopening the db finds
exactly what was committed before. A db file that is truncated or whose meta
pages are garbage is refused at open with one clear line, before LMDB reads
a page of it (a truncated file would otherwise kill the process with SIGBUS).
"""

from __future__ import annotations

import os
import random
import shutil
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.node import Node
from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import HardState
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage import StorageError, WriteBatch
from dkv.storage.disk_faults import (
    ENABLE_VARIABLE,
    SPEC_VARIABLE,
    DiskFailed,
    eio,
    hook_from_spec,
    install_from_environ,
)
from tests.conftest import NullTransport, wait_for
from tests.test_storage import MEMBERS, applied, open_lmdb, put_entry, value


def _fail_with_eio() -> None:
    raise eio()


# -- the store ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_commit_failing_with_eio_is_never_retried_and_the_durable_state_survives(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    store = open_lmdb(path)
    store.bootstrap("cid", MEMBERS)
    first = (put_entry(2, b"k", b"v1"),)
    await store.write(WriteBatch(HardState(2, "a", 2), first, applied(store, first)))

    store.fault_hook = _fail_with_eio
    second = (put_entry(3, b"k", b"v2"),)
    with pytest.raises(DiskFailed) as failed:
        await store.write(WriteBatch(HardState(2, "a", 3), second, applied(store, second)))
    assert "Input/output error" in failed.value.line and path in failed.value.line
    assert "stopped to protect its data" in failed.value.line and "\n" not in failed.value.line

    # The disk "recovers": the store still takes no write (an fsync that
    # failed may have lost pages; only a restart knows what is durable).
    store.fault_hook = None
    with pytest.raises(DiskFailed):
        await store.write(WriteBatch(HardState(2, "a", 3), second, applied(store, second)))
    await store.close()

    reopened = open_lmdb(path)
    try:
        loaded = reopened.load()
        assert loaded is not None and loaded.applied == 2 and [e.index for e in loaded.entries] == [1, 2]
        assert value(reopened, b"k") == b"v1"
        third = (put_entry(3, b"k", b"v3"),)
        await reopened.write(WriteBatch(HardState(2, "a", 3), third, applied(reopened, third)))
        assert value(reopened, b"k") == b"v3"
    finally:
        await reopened.close()


@pytest_twisted.ensureDeferred
async def test_other_commit_errors_are_not_disk_failures(tmp_path) -> None:
    store = open_lmdb(str(tmp_path / "n.db"))
    store.bootstrap("cid", MEMBERS)

    def boom() -> None:
        raise RuntimeError("not the disk")

    store.fault_hook = boom
    try:
        with pytest.raises(RuntimeError):
            await store.write(WriteBatch(HardState(2, "a", 1)))
        store.fault_hook = None
        await store.write(WriteBatch(HardState(2, "a", 1)))  # the store still writes
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_eio_on_a_file_system_without_room_is_a_full_disk(tmp_path, monkeypatch) -> None:
    """LMDB reports a write the disk cut short (the space ran out midway) as
    EIO. With no room left on the file system that is a full disk: ENOSPC,
    the store still takes writes, and the very same batch commits once
    there is room again (nothing of it was committed)."""
    from dkv.disk_full import is_disk_full
    from dkv.storage import lmdb_store

    store = open_lmdb(str(tmp_path / "n.db"))
    store.bootstrap("cid", MEMBERS)
    room = [0]
    monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: room[0])
    store.fault_hook = _fail_with_eio
    batch_entries = (put_entry(2, b"k", b"v"),)
    batch = WriteBatch(HardState(2, "a", 2), batch_entries, applied(store, batch_entries))
    try:
        with pytest.raises(OSError) as full:
            await store.write(batch)
        assert is_disk_full(full.value) and not isinstance(full.value, DiskFailed)
        assert "cut short by a full file system" in str(full.value)
        assert value(store, b"k") is None
        store.fault_hook = None
        room[0] = 1 << 30
        await store.write(batch)
        assert value(store, b"k") == b"v"
        store.fault_hook = _fail_with_eio  # with room, EIO is the disk failing
        with pytest.raises(DiskFailed):
            await store.write(WriteBatch(HardState(2, "a", 2)))
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_eio_with_only_the_file_systems_reserve_left_is_a_full_disk(tmp_path, monkeypatch) -> None:
    """ext4 keeps 2% of its blocks (at most 16 MiB) back and refuses a write
    that needs them, while statvfs counts them free: seen on a real 24 MiB
    ext4 refusing writes with 491 KiB "free" (tests/test_real_disk_process.py)."""
    from dkv.disk_full import is_disk_full
    from dkv.storage import lmdb_store

    store = open_lmdb(str(tmp_path / "n.db"))
    store.bootstrap("cid", MEMBERS)
    reserve = lmdb_store.reserve_bytes(str(tmp_path / "n.db"))
    assert 0 < reserve <= lmdb_store.RESERVE_MAX_BYTES
    monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: reserve)
    store.fault_hook = _fail_with_eio
    try:
        with pytest.raises(OSError) as full:
            await store.write(WriteBatch(HardState(2, "a", 2)))
        assert is_disk_full(full.value) and not isinstance(full.value, DiskFailed)
    finally:
        store.fault_hook = None
        await store.close()


# -- the driver ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_driver_stops_the_node_with_one_line(tmp_path) -> None:
    from twisted.internet import reactor

    from dkv.storage.lmdb_store import LmdbStore

    store = LmdbStore.open(str(tmp_path / "node.db"), reactor)
    state = store.bootstrap("test-cluster", Membership((Member("a", "127.0.0.1:1"),)))
    fatal: list[Failure] = []
    replication = ReplicationService(
        node_id="a",
        state=state,
        store=store,
        transport=NullTransport(),
        clock=reactor,
        rng=random.Random(1),
        config=DriverConfig(
            raft=RaftConfig(election_ticks=10, heartbeat_ticks=1),
            tick_seconds=0.01,
            request_timeout=5.0,
            first_election_ticks=1,
        ),  # fmt: skip
        on_fatal=fatal.append,
    )
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    replication.startService()
    try:
        await wait_for(lambda: replication.raft.role is Role.LEADER and replication.applied >= 2, what="leadership")
        node = Node(replication, store)
        await node.put(b"before", b"1")
        store.fault_hook = _fail_with_eio
        refused = node.put(b"after", b"2")
        await wait_for(lambda: bool(fatal), what="the fatal report")
        refused.addErrback(lambda f: None)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await replication.stopService()
        await store.close()
    assert len(fatal) == 1 and isinstance(fatal[0].value, DiskFailed)
    critical = [e for e in events if e.get("log_level") is not None and e["log_level"].name == "critical"]
    assert len(critical) == 1 and "log_failure" not in critical[0]
    assert "stopped to protect its data" in critical[0]["line"]
    reopened = open_lmdb(str(tmp_path / "node.db"))
    try:
        # The acknowledged put is durable in the log (a restart commits and
        # applies it again; the process test reads it back); the other never
        # reached the disk.
        loaded = reopened.load()
        assert loaded is not None
        durable = [e for e in loaded.entries if b"before" in e.data]
        assert durable
        assert not [e for e in loaded.entries if b"after" in e.data]
    finally:
        await reopened.close()


# -- damaged db files at open ---------------------------------------------------------------


@pytest.fixture
def good_db(tmp_path) -> str:
    """A closed db with a few thousand keys (several hundred pages)."""
    path = str(tmp_path / "good.db")
    store = open_lmdb(path)
    store.bootstrap("cid", MEMBERS)
    entries = tuple(put_entry(i, b"key-%d" % i, b"v" * 200) for i in range(2, 3002))
    store._write_batch(WriteBatch(HardState(2, "", 3001), entries, applied(store, entries)))
    store.close_now()
    return path


def _damaged(good: str, name: str, damage: Any) -> str:
    path = os.path.join(os.path.dirname(good), name)
    shutil.copy(good, path)
    damage(path)
    return path


def _truncate_to_half(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _overwrite_start(content: bytes) -> Any:
    def damage(path: str) -> None:
        with open(path, "r+b") as f:
            f.write(content)

    return damage


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (_truncate_to_half, "it is truncated"),
        (_overwrite_start(b"\0" * 8192), "meta pages are not valid"),
        (_overwrite_start(random.Random(7).randbytes(8192)), "meta pages are not valid"),
        (_overwrite_start(random.Random(8).randbytes(4096)), "meta pages are not valid"),  # the first meta page
    ],
    ids=["truncated", "zeroed-meta", "garbage-meta", "garbage-first-meta"],
)
def test_a_damaged_db_file_is_refused_at_open_with_one_line(good_db, damage, needle) -> None:
    path = _damaged(good_db, "bad.db", damage)
    with pytest.raises(StorageError) as refused:
        open_lmdb(path)
    line = str(refused.value)
    assert "\n" not in line and path in line and needle in line
    assert "re-join" in line and "backup" in line


def test_the_good_db_opens(good_db) -> None:
    store = open_lmdb(good_db)
    try:
        assert value(store, b"key-3001") == b"v" * 200
    finally:
        store.close_now()


# -- the test-only hook from the environment ------------------------------------------------


class _Holder:
    fault_hook = None


def test_the_environment_hook_needs_the_test_flag(tmp_path) -> None:
    trigger = tmp_path / "fail-now"
    spec = f"eio-when={trigger}"
    holder = _Holder()
    install_from_environ(holder, {SPEC_VARIABLE: spec})
    assert holder.fault_hook is None  # not without DKV_TESTING_ONLY_FAULTS=1
    install_from_environ(holder, {SPEC_VARIABLE: spec, ENABLE_VARIABLE: "1"})
    hook = holder.fault_hook
    assert hook is not None
    hook()  # no trigger file yet: the commit goes ahead
    trigger.touch()
    with pytest.raises(OSError) as failed:
        hook()
    assert failed.value.errno == 5


def test_a_slow_disk_spec_delays_each_commit(tmp_path) -> None:
    slept: list[float] = []
    hook_from_spec("commit-delay=0.5", sleep=slept.append)()
    assert slept == [0.5]
    trigger = tmp_path / "slow-now"
    later = hook_from_spec(f"commit-delay=0.25,slow-when={trigger}", sleep=slept.append)
    later()
    assert slept == [0.5]
    trigger.touch()
    later()
    assert slept == [0.5, 0.25]
    with pytest.raises(ValueError):
        hook_from_spec("eio-sometimes")
