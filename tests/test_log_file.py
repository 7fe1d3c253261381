"""The log file (``dkv.storage.log_file``) alone, and LmdbStore's use of it:
log-only batches there, the next transaction taking them, and what a crash,
a torn record or a stranger's file leave."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

import lmdb
import pytest
import pytest_twisted
from twisted.internet import reactor

from dkv.raft.messages import HardState
from dkv.storage import StorageError, WriteBatch, lmdb_store
from dkv.storage.disk_faults import DiskFailed, eio, enospc
from dkv.storage.lmdb_store import MIN_LOG_FILE_BYTES, LmdbStore
from dkv.storage.log_file import LogFile, LogFileFull, log_file_path
from tests.test_storage import MEMBERS, acked_before_kill_9, applied, put_entry, value

# -- the file ------------------------------------------------------------------------


def _rec(n: int) -> tuple[bytes | None, list[tuple[int, bytes]]]:
    return (b"hs%d" % n if n % 2 else None), [(n, b"entry %d" % n), (n + 1, b"")]


def test_records_read_back_in_order_and_the_next_append_follows(tmp_path) -> None:
    path = str(tmp_path / "w")
    f = LogFile.open(path, 1 << 16)
    assert os.path.getsize(path) == 1 << 16  # preallocated
    assert f.records(7) == []
    for n in range(1, 4):
        f.append(_rec(n))
    f.close()
    g = LogFile.open(path, 1 << 16)
    assert g.records(7) == [_rec(1), _rec(2), _rec(3)]
    g.append(_rec(4))
    assert LogFile.open(path, 1 << 16).records(7) == [_rec(n) for n in range(1, 5)]
    g.close()


def test_only_the_epoch_asked_counts_and_a_restart_overwrites_from_the_start(tmp_path) -> None:
    path = str(tmp_path / "w")
    f = LogFile.open(path, 1 << 16)
    f.records(7)
    for n in range(1, 6):
        f.append(_rec(n))
    assert LogFile.open(path, 1 << 16).records(8) == []  # another db's, or an older epoch
    f.restart(8)
    f.append(_rec(10))
    again = LogFile.open(path, 1 << 16)
    assert again.records(8) == [_rec(10)]  # the epoch-7 records behind it end the epoch
    assert LogFile.open(path, 1 << 16).records(7) == []  # the first record is epoch 8's now
    f.close()
    again.close()


@pytest.mark.parametrize("damage", ["last byte", "header", "cut short"])
def test_a_torn_record_ends_the_records_and_the_next_append_replaces_it(tmp_path, damage) -> None:
    path = str(tmp_path / "w")
    f = LogFile.open(path, 1 << 16)
    f.records(7)
    f.append(_rec(1))
    start = f.offset
    f.append(_rec(2))
    end = f.offset
    f.close()
    with open(path, "r+b") as raw:
        if damage == "last byte":
            raw.seek(end - 1)
            raw.write(b"\xff")
        elif damage == "header":
            raw.seek(start)
            raw.write(b"\xff\xff\xff\x7f")  # a length past the file's end
        else:
            raw.seek(start + 20)
            raw.write(bytes(end - start - 20))  # the tail never reached the disk
    g = LogFile.open(path, 1 << 16)
    assert g.records(7) == [_rec(1)]
    assert g.offset == start
    g.append(_rec(3))
    assert LogFile.open(path, 1 << 16).records(7) == [_rec(1), _rec(3)]
    g.close()


def test_a_record_that_does_not_fit_is_refused_and_changes_nothing(tmp_path) -> None:
    f = LogFile.open(str(tmp_path / "w"), 256)
    f.records(7)
    f.append(_rec(1))
    at = f.offset
    with pytest.raises(LogFileFull):
        f.append((None, [(2, b"x" * 300)]))
    assert f.offset == at
    assert f.records(7) == [_rec(1)]
    f.close()


def test_a_failed_append_does_not_count(tmp_path) -> None:
    f = LogFile.open(str(tmp_path / "w"), 1 << 12)
    f.records(7)

    def failing() -> None:
        raise eio()

    with pytest.raises(OSError):
        f.append(_rec(1), before_sync=failing)
    assert f.offset == 0
    f.append(_rec(2))
    assert f.records(7) == [_rec(2)]
    f.close()


def test_a_file_that_cannot_be_made_is_not_left_behind(tmp_path, monkeypatch) -> None:
    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(OSError):
        LogFile.open(str(tmp_path / "w"), 1 << 16)
    assert not os.path.exists(tmp_path / "w")


# -- LmdbStore over it ---------------------------------------------------------------------


def _lmdb_log(store: LmdbStore) -> list[int]:
    """The indexes of the entries in LMDB's own log (not the log file)."""
    with store._env.begin() as txn:
        return [int.from_bytes(k, "big") for k in txn.cursor(db=store._log).iternext(values=False)]


def _bootstrapped(tmp_path) -> tuple[str, LmdbStore]:
    """A new store (with its log file) at tmp_path/n.db, bootstrapped."""
    path = str(tmp_path / "n.db")
    store = LmdbStore.open(path, reactor)
    store.bootstrap("cid", MEMBERS)
    return path, store


def _crash(store: LmdbStore) -> None:
    """Stop as a crash would: the log file's records are not given to LMDB."""
    store.close_now()


def _entries(first: int, last: int) -> tuple:
    return tuple(put_entry(i, b"k%d" % i, b"v%d" % i) for i in range(first, last + 1))


@pytest_twisted.ensureDeferred
async def test_log_only_batches_go_to_the_log_file_and_load_returns_them(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    s = LmdbStore.open(path, reactor)
    assert s.log_apart and os.path.exists(log_file_path(path))
    s.bootstrap("cid", MEMBERS)
    await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 5)))
    await s.write(WriteBatch(None, _entries(6, 9)))
    await s.write(WriteBatch(HardState(3, "b", 9), _entries(8, 10)))  # replaces 8 and 9
    assert _lmdb_log(s) == [1]  # all of it in the log file
    loaded = s.load()
    assert loaded.hard_state == HardState(3, "b", 9)
    assert [e.index for e in loaded.entries] == list(range(1, 11))
    assert loaded.entries[7] == _entries(8, 8)[0]
    _crash(s)
    s = LmdbStore.open(path, reactor)
    try:
        again = s.load()
        assert again.hard_state == loaded.hard_state and again.entries == loaded.entries
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_the_next_transaction_takes_the_records_in_order_and_empties_the_file(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    entries = _entries(2, 6)
    await s.write(WriteBatch(HardState(2, "a", 1), entries[:3]))
    await s.write(WriteBatch(HardState(2, "a", 4), entries[3:]))
    await s.write(WriteBatch(None, (), applied(s, entries)))
    assert _lmdb_log(s) == list(range(1, 7))
    assert s._log_file.offset == 0 and s._pending == []
    assert value(s, b"k6") == b"v6"
    _crash(s)
    s = LmdbStore.open(path, reactor)
    try:
        assert s._pending == []  # the file's records are of the epoch before
        loaded = s.load()
        assert loaded.hard_state == HardState(2, "a", 4) and len(loaded.entries) == 6 and loaded.applied == 6
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_clean_close_gives_lmdb_the_records(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 4)))
    await s.close()
    s = LmdbStore.open(path, reactor)
    try:
        assert _lmdb_log(s) == [1, 2, 3, 4] and s._pending == []
        assert s.load().hard_state == HardState(2, "a", 1)
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_torn_last_record_loses_only_that_unacknowledged_batch(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 3)))
    end = s._log_file.offset
    await s.write(WriteBatch(HardState(3, "", 1), _entries(4, 5)))
    _crash(s)
    with open(log_file_path(path), "r+b") as raw:
        raw.seek(end + 30)
        raw.write(b"\x00" * 16)
    s = LmdbStore.open(path, reactor)
    try:
        loaded = s.load()
        assert loaded.hard_state == HardState(2, "a", 1)
        assert [e.index for e in loaded.entries] == [1, 2, 3]
        await s.write(WriteBatch(None, _entries(4, 4)))  # appended where the torn one was
        assert [e.index for e in s.load().entries] == [1, 2, 3, 4]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_log_file_left_by_another_db_counts_for_nothing(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 9)))
    _crash(s)
    os.unlink(path)  # a new db at the same path; the old log file stays
    os.unlink(path + "-lock")
    s = LmdbStore.open(path, reactor)
    try:
        assert s.load() is None
        s.bootstrap("other", MEMBERS)
        assert [e.index for e in s.load().entries] == [1]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_batch_too_big_for_the_log_file_is_a_transaction(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    s = LmdbStore.open(path, reactor, log_file_bytes=MIN_LOG_FILE_BYTES)
    try:
        assert os.path.getsize(log_file_path(path)) == MIN_LOG_FILE_BYTES
        s.bootstrap("cid", MEMBERS)
        await s.write(WriteBatch(None, _entries(2, 2)))
        assert _lmdb_log(s) == [1] and len(s._pending) == 1
        big = (put_entry(3, b"big", b"x" * MIN_LOG_FILE_BYTES),)
        transaction = s.write(WriteBatch(None, big))
        assert not transaction.called  # the writer thread makes it, not the caller's
        await transaction
        assert _lmdb_log(s) == [1, 2, 3] and s._pending == [] and s._log_file.offset == 0
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_without_room_for_a_log_file_every_write_is_a_transaction(tmp_path, monkeypatch) -> None:
    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    path = str(tmp_path / "n.db")
    s = LmdbStore.open(path, reactor)
    try:
        assert not s.log_apart and not os.path.exists(log_file_path(path))
        s.bootstrap("cid", MEMBERS)
        await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 3)))
        assert _lmdb_log(s) == [1, 2, 3]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_a_small_file_system_gets_a_small_log_file_or_none(tmp_path, monkeypatch) -> None:
    import dkv.storage.lmdb_store as lmdb_store

    monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: 64 * MIN_LOG_FILE_BYTES)
    s = LmdbStore.open(str(tmp_path / "a.db"), reactor)
    assert s.log_apart and os.path.getsize(log_file_path(str(tmp_path / "a.db"))) == 4 * MIN_LOG_FILE_BYTES
    await s.close()
    monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: 8 * MIN_LOG_FILE_BYTES)
    s = LmdbStore.open(str(tmp_path / "b.db"), reactor)
    assert not s.log_apart and not os.path.exists(log_file_path(str(tmp_path / "b.db")))
    await s.close()


@pytest_twisted.ensureDeferred
async def test_a_log_file_that_exists_is_read_whatever_the_size_asked(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    await s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 3)))
    _crash(s)
    s = LmdbStore.open(path, reactor, log_file_bytes=0)
    try:
        assert s.log_apart and [e.index for e in s.load().entries] == [1, 2, 3]
    finally:
        await s.close()


def test_a_log_file_that_exists_but_cannot_be_opened_stops_the_start(tmp_path) -> None:
    path = str(tmp_path / "n.db")
    os.mkdir(log_file_path(path))  # exists, and is no file
    with pytest.raises(StorageError, match="cannot open the log file"):
        LmdbStore.open(path, reactor)


def _raising(error: Callable[[], OSError]) -> Callable[..., None]:
    """A stand-in (a fault hook, or ``os.fdatasync``) that raises error()."""

    def fail(*_: object) -> None:
        raise error()

    return fail


@pytest.mark.parametrize("thread", ["writer", "caller"])
@pytest_twisted.ensureDeferred
async def test_a_disk_that_fails_an_append_fails_the_store(tmp_path, monkeypatch, thread) -> None:
    """On the writer thread (a fault hook sends appends there) or on the
    caller's (an inline append whose fdatasync fails)."""
    _, s = _bootstrapped(tmp_path)
    if thread == "writer":
        s.fault_hook = _raising(eio)
    else:
        monkeypatch.setattr(os, "fdatasync", _raising(eio))
    failed = s.write(WriteBatch(None, _entries(2, 2)))
    assert failed.called == (thread == "caller")
    with pytest.raises(DiskFailed):
        await failed
    s.fault_hook = None
    monkeypatch.undo()
    with pytest.raises(DiskFailed):  # never written to again
        await s.write(WriteBatch(None, _entries(2, 2)))
    assert [e.index for e in s.load().entries] == [1]
    await s.close()


@pytest_twisted.ensureDeferred
async def test_a_full_disk_refuses_an_append_that_a_retry_then_makes(tmp_path) -> None:
    _, s = _bootstrapped(tmp_path)
    s.fault_hook = _raising(enospc)
    with pytest.raises(OSError) as refused:
        await s.write(WriteBatch(None, _entries(2, 2)))
    assert refused.value.errno == errno.ENOSPC
    s.fault_hook = None
    await s.write(WriteBatch(None, _entries(2, 2)))
    try:
        assert [e.index for e in s.load().entries] == [1, 2]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_log_file_records_survive_kill_9(tmp_path) -> None:
    """A child process appends log-only batches, reports each acknowledged
    one, and is killed with SIGKILL; every acknowledged entry is there on
    reopen, LMDB's own log holding none of the later ones."""
    path = str(tmp_path / "n.db")
    acked = acked_before_kill_9(
        path,
        """
        for i in range(2, 100000):
            s._write_batch(WriteBatch(HardState(2, "a", i - 1), (put_entry(i, b"k%d" % i, b"v%d" % i),)))
            print(i, flush=True)
        """,
    )
    s = LmdbStore.open(path, reactor)
    try:
        assert _lmdb_log(s) == [1]
        loaded = s.load()
        assert loaded.entries[-1].index >= acked and loaded.hard_state.commit >= acked - 1
        assert [e.index for e in loaded.entries] == list(range(1, len(loaded.entries) + 1))
    finally:
        await s.close()


def test_the_db_file_alone_is_an_lmdb_environment_that_holds_the_epoch(tmp_path) -> None:
    """The db file alone is a valid LMDB environment (what a backup copies)."""
    path, s = _bootstrapped(tmp_path)
    s.close_now()
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=8)
    with env.begin() as txn:
        meta = env.open_db(b"meta", txn=txn, create=False)
        assert txn.get(b"log_epoch", db=meta) is not None
    env.close()


@pytest_twisted.ensureDeferred
async def test_a_record_that_does_not_decode_is_a_damaged_db_not_a_traceback(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    await s.write(WriteBatch(None, _entries(2, 2)))
    s._log_file.append((None, [(3, b"\x00" * 8 + b"\xff")]))  # a kind no entry has, checksummed
    _crash(s)
    with pytest.raises(StorageError, match="is damaged .*does not decode"):
        LmdbStore.open(path, reactor)


# -- appends on the caller's thread ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_append_while_the_writer_is_idle_is_durable_when_write_returns(tmp_path) -> None:
    path, s = _bootstrapped(tmp_path)
    threads: list[threading.Thread] = []
    s.on_commit = lambda *_: threads.append(threading.current_thread())
    d = s.write(WriteBatch(HardState(2, "a", 1), _entries(2, 3)))
    assert d.called and threads == [threading.main_thread()]
    await d
    _crash(s)  # the record is on disk: a crash keeps it
    s = LmdbStore.open(path, reactor)
    try:
        assert [e.index for e in s.load().entries] == [1, 2, 3]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_an_append_waits_its_turn_behind_the_writers_work_and_a_fault_hook(tmp_path) -> None:
    _, s = _bootstrapped(tmp_path)
    entries = _entries(2, 3)
    await s.write(WriteBatch(HardState(2, "a", 1), entries))
    transaction = s.write(WriteBatch(None, (), applied(s, entries)))
    append = s.write(WriteBatch(None, _entries(4, 4)))
    assert not transaction.called and not append.called  # in order, after the transaction
    await transaction
    await append
    assert _lmdb_log(s) == [1, 2, 3] and [e.index for e in s.load().entries] == [1, 2, 3, 4]
    s.fault_hook = lambda: None  # a test's hook runs on the writer thread only
    hooked = s.write(WriteBatch(None, _entries(5, 5)))
    assert not hooked.called
    await hooked
    await s.close()


@pytest_twisted.ensureDeferred
async def test_after_a_slow_append_appends_go_to_the_writer_until_one_there_is_fast(tmp_path, monkeypatch) -> None:
    _, s = _bootstrapped(tmp_path)
    monkeypatch.setattr(lmdb_store, "INLINE_APPEND_SECONDS", 0.0)  # every append is slow
    first = s.write(WriteBatch(None, _entries(2, 2)))
    assert first.called  # none was slow before it
    slow = s.write(WriteBatch(None, _entries(3, 3)))
    assert not slow.called
    await slow
    monkeypatch.setattr(lmdb_store, "INLINE_APPEND_SECONDS", 60.0)  # the disk is fast again
    fast = s.write(WriteBatch(None, _entries(4, 4)))
    assert fast.called
    await fast
    assert [e.index for e in s.load().entries] == [1, 2, 3, 4]
    await s.close()
