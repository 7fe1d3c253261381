# test-case-name: tests.test_storage
"""The product's ``NodeStore``: one LMDB environment per node.

The db path is a file (``a.db``; LMDB adds ``a.db-lock``) with named
databases:

``kv.0``, ``kv.1``  the state machine's tables (``dkv.storage.lmdb_tables``:
                    every table under its own prefix byte): one is the
                    applied state (``meta:kv_active`` says which), the other
                    stages an incoming snapshot;
``log``             8-byte big-endian index -> term (8 bytes), kind (1 byte), data;
``meta``            ``format``, ``cluster_id``, ``hard_state``, ``applied``,
                    ``kv_active``, ``snapshot`` (the log's base: index, term,
                    configuration), ``incoming`` (progress of a staged
                    snapshot: index, term, next chunk, CRC, complete) and
                    ``log_epoch`` (the log file's, below).

Beside it, ``a.db-wal`` (``dkv.storage.log_file``): a write batch that only
appends entries or sets the hard state is made durable there, with one
``fdatasync``, and reaches LMDB with the next transaction, which carries
every such batch since the last, in order, before its own writes, and
starts the file afresh under a new epoch. Every other write is one LMDB
transaction committed with fsync (``sync=True``). All writes run on a
single writer thread, so the reactor never waits on the disk; reads use
short read transactions on the calling thread (LMDB readers never block on
the writer). LMDB commits are atomic and log file records are checksummed,
so a crash (kill -9, power loss) at any moment leaves the last committed
transaction and the records appended since, and nothing torn: opening the
store reads them back (``load`` returns the log and hard state they make).
A snapshot being received survives as its committed chunks (the transfer
resumes from there) and becomes the state in one transaction; compaction
is one transaction. The db is the two files: copy or remove both or neither.
When the log file cannot be made (no room for it), the store runs without
it and every write is an LMDB transaction, as the log entries then need.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import lmdb
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads

from dkv.logs import logger
from dkv.raft.membership import Membership
from dkv.raft.messages import Entry, EntryKind, HardState, SnapshotMeta
from dkv.storage import (
    PersistentState,
    StorageError,
    WriteBatch,
    apply_writes,
    bootstrap_state,
    record_crc,
)
from dkv.storage.disk_faults import DiskFailed, FaultHook, enospc, is_io_error
from dkv.storage.lmdb_tables import LmdbTables
from dkv.storage.log_file import DEFAULT_LOG_FILE_BYTES, LogFile, LogFileFull, LogRecord, log_file_path
from dkv.storage.snapshot_spool import RECORD_OVERHEAD, SpooledChunks
from dkv.storage.writer_thread import WriterThread

T = TypeVar("T")

#: Format 4: the state is the multi-version store's tables (dkv.mvcc). Format 3
#: (a plain key -> value state) is not read: its history does not exist.
FORMAT = b"4"
_INDEX = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">QQ")
_SNAPSHOT = struct.Struct(">QQ")
_INCOMING = struct.Struct(">QQQIB")

DEFAULT_MAP_SIZE = 64 << 30
#: A file system with less room than this (beyond its own reserve, see
#: ``reserve_bytes``) is full (LMDB's pages are 4 KiB).
FULL_BELOW_BYTES = 4096
#: ext4 keeps back 2% of its blocks, at most 4096 clusters (16 MiB), for the
#: metadata of delayed allocation (``s_resv_clusters``): ``statvfs`` counts
#: them free, but a write that needs them fails with ENOSPC. The 2% is of
#: all blocks, journal and other overhead included, which ``statvfs`` does
#: not count: 1/40 of what it counts covers overhead up to a fifth.
RESERVE_FRACTION = 40
RESERVE_MAX_BYTES = 16 << 20
#: A log-only write is appended to the log file on the caller's thread (the
#: reactor's) while the last append took at most this long; after a slower
#: one (a slow or failing disk) appends go to the writer thread, and come
#: back once one there is this fast again (see ``LmdbStore.write``).
INLINE_APPEND_SECONDS = 0.002
#: A log file smaller than this is not made (the store does without).
MIN_LOG_FILE_BYTES = 256 << 10
#: Room a snapshot's spool leaves free on the db's file system, at least.
SPOOL_HEADROOM_BYTES = 64 << 20

log = logger("dkv.storage")


def reserve_bytes(path: str) -> int:
    """The room path's file system may refuse although ``free_bytes``
    counts it (ext4's reserve for delayed allocation; see RESERVE_FRACTION);
    0 if it cannot be told."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return 0
    return min(st.f_blocks * st.f_frsize // RESERVE_FRACTION, RESERVE_MAX_BYTES)


def free_bytes(path: str) -> int:
    """The room left on path's file system for this process (root may use
    the blocks reserved for it); a very large number if it cannot be told."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return 1 << 62
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def map_size_for(path: str, asked: int) -> int:
    """The map to open path with: asked, or twice the file's size if that
    is more. A write that found the map full (``lmdb.MapFullError``, which
    the driver treats as a full disk: ``ReplicationService._stall``) gets
    through after a restart; LMDB cannot grow the map of an environment
    while another thread of the process reads it."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return asked
    return max(asked, 2 * size)


def _damaged(path: str, why: str) -> str:
    return (
        f"db file {path} is damaged ({why}): remove this member's db and let it re-join, "
        "or restore it from a backup (see 'Disk failures' in the README)"
    )


def _index_key(index: int) -> bytes:
    return _INDEX.pack(index)


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY_HEAD.pack(entry.term, entry.kind) + entry.data


def _bytes_written(pending: list[tuple[HardState | None, tuple[Entry, ...]]], batch: WriteBatch) -> int:
    """About the bytes a transaction of the pending log records and batch
    writes: each record on a page of its own at worst (copy-on-write pages
    and their branches), entries and values in full."""
    records = [*(e for _, entries in pending for e in entries), *batch.entries]
    size = sum(len(e.data) for e in records) + 64 * len(records)
    if batch.apply is not None:
        size += sum(len(key) + len(value or b"") + 64 for _, key, value in batch.apply.writes)
    return 2 * size + 16 * 4096


def _decoded(record: LogRecord) -> tuple[HardState | None, tuple[Entry, ...]]:
    hard_state, entries = record
    return (
        _decode_hard_state(hard_state) if hard_state is not None else None,
        tuple(decode_entry(index, raw) for index, raw in entries),
    )


def decode_entry(index: int, raw: bytes) -> Entry:
    term, kind = _ENTRY_HEAD.unpack_from(raw)
    return Entry(index, term, EntryKind(kind), bytes(raw[_ENTRY_HEAD.size :]))


def _new_epoch() -> int:
    """A log file epoch: random, never 0 (the value of a file's unwritten bytes)."""
    return secrets.randbits(64) or 1


def _encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(hs.term, hs.commit) + hs.vote.encode()


def _decode_hard_state(raw: bytes) -> HardState:
    term, commit = _HARD_STATE.unpack_from(raw)
    return HardState(term=term, vote=bytes(raw[_HARD_STATE.size :]).decode(), commit=commit)


def _encode_snapshot(meta: SnapshotMeta) -> bytes:
    return _SNAPSHOT.pack(meta.index, meta.term) + meta.membership.encode()


def _decode_snapshot(raw: bytes) -> SnapshotMeta:
    index, term = _SNAPSHOT.unpack_from(raw)
    return SnapshotMeta(index, term, Membership.decode(bytes(raw[_SNAPSHOT.size :])))


class LmdbSnapshotReader:
    """A read transaction over the applied state, read in chunks of about
    chunk_bytes. Chunk boundaries are remembered, so an interrupted transfer
    can resume at any chunk already read.

    The first ``read`` copies the whole state into a temporary file in
    spool_dir (``dkv.storage.snapshot_spool``) and ends the transaction, so
    the transfer, however slow, and the minute a failed one is kept for
    resuming, pin no LMDB pages (a live reader keeps LMDB from reusing the
    pages freed after it began, and the db file grows). When spool_dir is
    None or its file system lacks the room (the state's pages and
    ``SPOOL_HEADROOM_BYTES`` besides: the spool must never fill the db's disk), or
    the copy fails, it reads through the transaction as it goes instead."""

    def __init__(
        self, txn: lmdb.Transaction, db: Any, index: int, chunk_bytes: int, spool_dir: str | None = None
    ) -> None:
        self._txn: lmdb.Transaction | None = txn
        self._db = db
        self._cursor = txn.cursor(db=db)
        self.index = index
        self._chunk_bytes = chunk_bytes
        self._starts: list[bytes | None] = [None]
        self._spool_dir = spool_dir
        self._spool: SpooledChunks | None = None
        self._lock = threading.Lock()

    @property
    def holds_transaction(self) -> bool:
        """Whether the reader still holds its LMDB read transaction."""
        return self._txn is not None

    def read(self, seq: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        with self._lock:
            if self._spool is None and self._spool_dir is not None and self._txn is not None:
                self._spool = self._spool_state(self._txn, self._spool_dir)
            if self._spool is not None:
                return self._spool.read(seq)
            return self._read_txn(seq)

    def _spool_state(self, txn: lmdb.Transaction, directory: str) -> SpooledChunks | None:
        stat = txn.stat(self._db)
        needed = _pages(stat) * int(stat["psize"])
        if free_bytes(os.path.join(directory, "x")) < needed + SPOOL_HEADROOM_BYTES:
            log.info(
                "snapshot at index {index}: too little room in {dir} to copy the state ({mib:.1f} MiB), "
                "sending it from a read transaction held for the transfer",
                index=self.index, dir=directory, mib=needed / (1 << 20),
            )
            return None
        try:
            spool = SpooledChunks.write(
                cast("Iterator[tuple[bytes, bytes]]", self._cursor.iternext(keys=True, values=True)),
                self._chunk_bytes,
                directory,
            )
        except OSError as e:
            log.info(
                "snapshot at index {index}: copying the state to {dir} failed ({error}), "
                "sending it from a read transaction held for the transfer",
                index=self.index, dir=directory, error=e,
            )
            return None
        self._release_txn()
        return spool

    def _read_txn(self, seq: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        if seq >= len(self._starts):
            raise ValueError(f"chunk {seq} is not next to a chunk read")
        start = self._starts[seq]
        more = self._cursor.set_range(start) if start is not None else self._cursor.first()
        records: list[tuple[bytes, bytes]] = []
        size = 0
        while more and size < self._chunk_bytes:
            key, value = cast("tuple[bytes, bytes]", self._cursor.item())  # no buffers=True: bytes
            records.append((key, value))
            size += len(key) + len(value) + RECORD_OVERHEAD
            more = self._cursor.next()
        if more and seq + 1 == len(self._starts):
            self._starts.append(cast(bytes, self._cursor.key()))
        return records, not more

    def _release_txn(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None

    def close(self) -> None:
        self._release_txn()
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class LmdbStore:
    """Open with ``LmdbStore.open(path, reactor)``; ``close()`` when done."""

    def __init__(
        self,
        env: lmdb.Environment,
        lock_fd: int,
        reactor: IReactorFromThreads,
        log_file: LogFile | None = None,
    ) -> None:
        """log_file: the log file (None: none); its records of the db's
        epoch are read now (``load`` returns what they make)."""
        self._env = env
        self._lock_fd = lock_fd
        self._reactor = reactor
        self._kvs = (env.open_db(b"kv.0"), env.open_db(b"kv.1"))
        self._log = env.open_db(b"log")
        self._meta = env.open_db(b"meta")
        with env.begin() as txn:
            self._active = 1 if txn.get(b"kv_active", db=self._meta) == b"1" else 0
        self._writer = WriterThread(reactor, name="dkv-lmdb-writer")
        self._writer.start()
        self._closed = False
        #: How long the last append to the log file took (its pwrite and
        #: fdatasync), on whichever thread; 0.0 before the first.
        self._append_seconds = 0.0
        #: Told (seconds, wrote_log, applied) after each committed write
        #: batch, on the thread that wrote it (the writer thread, or the
        #: reactor's for an inline append): the commit's duration (its fsync),
        #: whether it wrote log entries or hard state, and whether it
        #: applied entries to the state (for ``dkv.metrics``).
        self.on_commit: Callable[[float, bool, bool], None] | None = None
        #: Tests only: called on the writer thread before each commit of a
        #: write batch; what it raises, the commit does (``dkv.storage.disk_faults``).
        #: While set, every write goes to the writer thread (none is inline).
        self.fault_hook: FaultHook | None = None
        self._disk_failed: DiskFailed | None = None
        self._log_file = log_file
        #: The log-only batches appended to the log file since LMDB's last
        #: transaction (hard state, entries), oldest first.
        self._pending: list[tuple[HardState | None, tuple[Entry, ...]]] = []
        if log_file is not None:
            with env.begin() as txn:
                raw = txn.get(b"log_epoch", db=self._meta)
            epoch = _INDEX.unpack(raw)[0] if raw else 0
            try:
                self._pending = [_decoded(record) for record in log_file.records(epoch)]
            except (ValueError, struct.error) as e:
                raise StorageError(
                    _damaged(env.path(), f"its log file {log_file.path} holds a record that does not decode: {e}")
                ) from None

    @property
    def _kv(self) -> Any:
        return self._kvs[self._active]

    @property
    def _staging(self) -> Any:
        return self._kvs[1 - self._active]

    @property
    def log_apart(self) -> bool:
        """Whether log-only batches go to the log file (then LMDB only gets
        them with the next transaction that has other writes: the driver
        holds its applied writes for that one, ``held_apply``)."""
        return self._log_file is not None

    @classmethod
    def open(
        cls,
        path: str,
        reactor: IReactorFromThreads,
        map_size: int = DEFAULT_MAP_SIZE,
        log_file_bytes: int = DEFAULT_LOG_FILE_BYTES,
    ) -> LmdbStore:
        """Open (creating if needed) the store at path, and its log file;
        raise StorageError with a readable reason when that is impossible.
        A new log file gets log_file_bytes, at most 1/16 of the room left
        (0, or less than ``MIN_LOG_FILE_BYTES``: none); one that cannot be
        made is done without. One that exists must open (it may hold
        acknowledged entries), whatever log_file_bytes says."""
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StorageError(f"cannot open db path {path}: directory {parent} does not exist")
        try:
            env = lmdb.open(
                path,
                subdir=False,
                map_size=map_size_for(path, map_size),
                max_dbs=8,
                sync=True,
                metasync=True,
                readahead=False,
                max_readers=256,
            )
        except lmdb.InvalidError:
            raise StorageError(_damaged(path, "its LMDB meta pages are not valid")) from None
        except lmdb.Error as e:
            raise StorageError(f"cannot open db path {path}: {e}") from None
        # Reading past the end of a truncated file would kill the process
        # (SIGBUS), so check the size the meta page promises first.
        info, psize = env.info(), env.stat()["psize"]
        expected, actual = (info["last_pgno"] + 1) * psize, os.path.getsize(path)
        if actual < expected:
            env.close()
            raise StorageError(_damaged(path, f"it is truncated: {actual} bytes of the {expected} it holds"))
        # LMDB itself allows several processes on one environment; two nodes
        # sharing a db would be a disaster, so take an exclusive lock.
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            env.close()
            raise StorageError(f"db path {path} is in use by another process") from None
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            fmt = txn.get(b"format", db=meta)
            if txn.get(b"log_epoch", db=meta) is None:
                txn.put(b"log_epoch", _INDEX.pack(_new_epoch()), db=meta)
            if fmt is None:
                txn.put(b"format", FORMAT, db=meta)
            elif fmt != FORMAT:
                env.close()
                os.close(fd)
                if fmt == b"3":
                    raise StorageError(
                        f"db path {path} was written by a dkv before the multi-version store (format 3), "
                        "which this version cannot read: start this node with an empty db and let it join "
                        "(--join), or export its keys with the old version first"
                    )
                raise StorageError(f"db path {path} has unknown format {fmt!r}")
        log_file = None
        wal = log_file_path(path)
        existed = os.path.exists(wal)
        # A new file takes at most 1/16 of the room left (a small file system
        # keeps room for the db); one that exists keeps its size.
        size = 0 if existed else min(log_file_bytes, free_bytes(path) // 16)
        if existed or size >= MIN_LOG_FILE_BYTES:
            try:
                log_file = LogFile.open(wal, size)
            except OSError as e:
                if existed:
                    env.close()
                    os.close(fd)
                    raise StorageError(f"cannot open the log file {wal} of db {path}: {e}") from None
                log.warn(
                    "no log file beside db {path} ({error}): every write is an LMDB transaction",
                    path=path, error=e,
                )
        elif log_file_bytes > 0:
            log.warn(
                "no log file beside db {path} (too little room for one): every write is an LMDB transaction",
                path=path,
            )
        try:
            return cls(env, fd, reactor, log_file)
        except BaseException:
            if log_file is not None:
                log_file.close()
            env.close()
            os.close(fd)
            raise

    # -- NodeStore ---------------------------------------------------------------

    def load(self) -> PersistentState | None:
        with self._env.begin(buffers=False) as txn:
            cluster_id = txn.get(b"cluster_id", db=self._meta)
            if cluster_id is None:
                return None
            raw_hs = txn.get(b"hard_state", db=self._meta)
            hard_state = _decode_hard_state(raw_hs) if raw_hs else HardState()
            applied = txn.get(b"applied", db=self._meta)
            raw_snap = txn.get(b"snapshot", db=self._meta)
            snap = _decode_snapshot(raw_snap) if raw_snap else SnapshotMeta(0, 0)
            entries = tuple(
                decode_entry(_INDEX.unpack(k)[0], v)
                for k, v in txn.cursor(db=self._log).iternext(keys=True, values=True)
            )
        if self._pending:
            hard_state, entries = self._with_pending(hard_state, entries, snap.index)
        return PersistentState(
            cluster_id=cluster_id.decode(),
            hard_state=hard_state,
            entries=entries,
            applied=_INDEX.unpack(applied)[0] if applied else 0,
            snapshot_index=snap.index,
            snapshot_term=snap.term,
            snapshot_membership=snap.membership,
        )

    def _with_pending(
        self, hard_state: HardState, entries: tuple[Entry, ...], base: int
    ) -> tuple[HardState, tuple[Entry, ...]]:
        """The hard state and log LMDB holds, as the log file's records
        (applied in order, as ``_write_raft`` would) leave them."""
        log_entries = list(entries)
        for hs, appended in self._pending:
            if hs is not None:
                hard_state = hs
            if not appended:
                continue
            first = appended[0].index
            last = log_entries[-1].index if log_entries else base
            if first <= base or first > last + 1:
                raise StorageError(
                    _damaged(
                        self._env.path(),
                        f"its log file appends entries from {first} to a log of {base + 1}..{last}",
                    )
                )
            del log_entries[first - base - 1 :]
            log_entries.extend(appended)
        return hard_state, tuple(log_entries)

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        state = bootstrap_state(cluster_id, membership)
        with self._env.begin(write=True) as txn:
            self._check_empty(txn)
            self._write_raft(txn, state.hard_state, state.entries)
            txn.put(b"cluster_id", cluster_id.encode(), db=self._meta)
        return state

    def initialize(self, cluster_id: str, membership: Membership) -> PersistentState:
        with self._env.begin(write=True) as txn:
            self._check_empty(txn)
            txn.put(b"snapshot", _encode_snapshot(SnapshotMeta(0, 0, membership)), db=self._meta)
            txn.put(b"cluster_id", cluster_id.encode(), db=self._meta)
        return PersistentState(
            cluster_id=cluster_id, hard_state=HardState(), entries=(), applied=0,
            snapshot_membership=membership,
        )

    def write(self, batch: WriteBatch) -> Deferred[None]:
        """Make batch durable; the Deferred fires once it is, in the order
        the batches were given.

        A log-only batch is appended to the log file at once, on the
        caller's thread, when the writer thread has nothing submitted that
        is not yet delivered (so the order holds) and the last append took
        at most ``INLINE_APPEND_SECONDS``: the Deferred has fired when this
        returns. An append is one ``pwrite`` and one ``fdatasync`` (about
        90 µs on this project's machine), less than the two thread
        hand-offs it saves (each a cross-core wake-up, and the GIL). After a
        slow append the next go to the writer thread, so that a slow disk
        stalls the writes, not the reactor (heartbeats, reads); the first
        fast one there brings them back. Everything else, and a batch that
        does not fit in the log file, goes to the writer thread."""
        if self._may_append_inline(batch):
            try:
                if self._disk_failed is not None:
                    raise self._disk_failed  # never write (nor fsync) again after the disk failed
                self._append(batch.hard_state, batch.entries)
            except LogFileFull:
                pass  # a transaction takes it, on the writer thread
            except BaseException:  # noqa: BLE001 - handed to the Deferred
                return fail()
            else:
                return succeed(None)
        return self._in_writer(lambda: self._write_batch(batch))

    def _may_append_inline(self, batch: WriteBatch) -> bool:
        return (
            batch.log_only
            and self._log_file is not None
            and not self._closed
            and self.fault_hook is None
            and self._append_seconds <= INLINE_APPEND_SECONDS
            and self._writer.idle
        )

    @contextlib.contextmanager
    def reading(self) -> Iterator[LmdbTables]:
        """The applied tables, in a read transaction closed when the block
        ends (LMDB readers never wait for the writer)."""
        with self._env.begin(buffers=False) as txn:
            yield LmdbTables(txn, self._state_db(txn))

    def size(self) -> tuple[int, int]:
        """The file's size, and the bytes of the pages the databases hold
        (the two meta pages and every tree's branch, leaf and overflow
        pages; not the pages compaction freed, which LMDB reuses): etcd's
        size in use, which falls when history is compacted away. Both
        count the log file's records that LMDB has yet to get (twice in
        use: their entries' writes, applied and held, will land as well),
        so that the quota sees a write as soon as it is in the log."""
        main = self._env.stat()
        with self._env.begin() as txn:
            pages = 2 + _pages(main) + sum(_pages(txn.stat(db)) for db in (*self._kvs, self._log, self._meta))
        pending = self._log_file.offset if self._log_file is not None else 0
        return os.path.getsize(self._env.path()) + pending, pages * main["psize"] + 2 * pending

    def copy(self, fd: int) -> None:
        self._env.copyfd(fd, compact=True)

    def snapshot_reader(self, chunk_bytes: int) -> LmdbSnapshotReader:
        txn = self._env.begin(buffers=False)
        raw = txn.get(b"applied", db=self._meta)
        return LmdbSnapshotReader(
            txn, self._state_db(txn), _INDEX.unpack(raw)[0] if raw else 0, chunk_bytes,
            spool_dir=os.path.dirname(os.path.abspath(self._env.path())),
        )

    def _state_db(self, txn: lmdb.Transaction) -> Any:
        """The state database as txn sees it: an install switches it in the
        same transaction, and ``_active`` (the writer's) may lag a reader."""
        return self._kvs[1 if txn.get(b"kv_active", db=self._meta) == b"1" else 0]

    def stage_begin(self, meta: SnapshotMeta) -> Deferred[int]:
        return self._in_writer(lambda: self._stage_begin(meta))

    def stage_chunk(
        self, seq: int, records: list[tuple[bytes, bytes]], crc: int, last: bool
    ) -> Deferred[None]:
        return self._in_writer(lambda: self._stage_chunk(seq, records, crc, last))

    def close(self) -> Deferred[None]:
        if self._closed:
            return succeed(None)
        self._closed = True
        d = self._in_writer(self._absorb)

        def release(_: object) -> None:
            self._writer.stop()
            self._release()

        d.addBoth(release)
        return d

    def close_now(self) -> None:
        """Close synchronously, without the reactor: for start-up failures,
        before the reactor runs (``close()`` finishes through it). Blocks
        until a write in progress, if any, is done."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        self._release()

    # -- internals ---------------------------------------------------------------

    def _in_writer(self, fn: Callable[[], T]) -> Deferred[T]:
        def unless_failed() -> T:
            if self._disk_failed is not None:
                raise self._disk_failed  # never write (nor fsync) again after the disk failed
            try:
                return fn()
            except lmdb.PanicError as e:  # an earlier failure left LMDB unusable
                raise self._fail(e) from e

        return self._writer.submit(unless_failed)

    def _commit(self, txn: lmdb.Transaction, size: Callable[[], int] | None = None) -> None:
        """Commit txn; a commit the disk fails (EIO) raises DiskFailed, and
        the store takes no more writes: a failed fsync is never retried.

        Except on a full file system: LMDB reports a write that the disk cut
        short (``pwrite`` wrote part of the pages, then the space ran out) as
        EIO, not ENOSPC. An EIO while the file system has no room left for
        the transaction (``_no_room``: ext4 refuses writes while its reserve
        is still counted free; size: reckons about the bytes the
        transaction writes, asked only then; None for a small one) is that,
        and raises ENOSPC instead (the caller may try the whole
        transaction again: nothing of it is committed, LMDB writes its meta
        page last).

        Whatever the error, if LMDB could not write its meta page it marks
        the environment unusable (every later transaction fails with
        ``MDB_PANIC``): that is a disk failure too (DiskFailed), even for
        ENOSPC (a thin device out of room fails the meta page's write)."""
        try:
            hook = self.fault_hook
            if hook is not None:
                hook()
            txn.commit()
        except Exception as e:
            txn.abort()  # a no-op when the failed commit already ended it
            if self._panicked():
                raise self._fail(e) from e
            if not is_io_error(e):
                raise
            raise self._io_failure(e, size() if size is not None else 0) from e

    def _io_failure(self, error: BaseException, size: int = 0) -> BaseException:
        """What an EIO from a write of about size bytes is: ENOSPC (a write
        the full file system cut short, ``_no_room``), or else DiskFailed
        (``_fail``): the error for the caller to raise."""
        if self._no_room(size):
            return enospc(f"{error}: a write cut short by a full file system")
        return self._fail(error)

    def _fail(self, error: BaseException) -> DiskFailed:
        """The disk failed with error: the store takes no more writes.
        Returns the DiskFailed for the caller to raise."""
        self._disk_failed = DiskFailed(self._env.path(), error)
        return self._disk_failed

    def _panicked(self) -> bool:
        """Whether LMDB has marked the environment unusable (MDB_PANIC)."""
        try:
            self._env.begin().abort()
        except lmdb.PanicError:
            return True
        return False

    def _no_room(self, size: int = 0) -> bool:
        """Whether the db's file system has less room than size bytes (at
        least a page) beyond what it keeps back (a write that needs the
        reserve is refused although ``statvfs`` counts it free)."""
        path = self._env.path()
        return free_bytes(path) < reserve_bytes(path) + max(FULL_BELOW_BYTES, size)

    def _release(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        self._env.close()
        os.close(self._lock_fd)

    def _check_empty(self, txn: lmdb.Transaction) -> None:
        if txn.get(b"cluster_id", db=self._meta) is not None:
            raise StorageError("store is not empty")

    def _write_batch(self, batch: WriteBatch) -> None:
        if batch.log_only and self._log_file is not None:
            try:
                self._append(batch.hard_state, batch.entries)
                return
            except LogFileFull:
                pass  # an LMDB transaction takes it, and empties the file
        active = self._active
        pending = self._pending
        epoch = _new_epoch() if pending else None
        txn = self._env.begin(write=True)
        try:
            for hard_state, entries in pending:
                self._write_raft(txn, hard_state, entries)
            if epoch is not None:
                txn.put(b"log_epoch", _INDEX.pack(epoch), db=self._meta)
            if batch.install is not None:
                active = self._install(txn, batch.install)
            self._write_raft(txn, batch.hard_state, batch.entries)
            if batch.apply is not None:
                apply_writes(LmdbTables(txn, self._kvs[active]), batch.apply.writes)
                txn.put(b"applied", _index_key(batch.apply.index), db=self._meta)
            if batch.compact is not None:
                self._compact(txn, batch.compact)
        except BaseException:
            txn.abort()
            raise
        started = time.perf_counter()
        self._commit(txn, lambda: _bytes_written(pending, batch))
        if epoch is not None:
            self._pending = []
            self._log_file.restart(epoch)  # type: ignore[union-attr]
        observe = self.on_commit
        if observe is not None:
            observe(
                time.perf_counter() - started,
                bool(batch.entries) or batch.hard_state is not None or bool(pending),
                batch.apply is not None,
            )
        self._active = active  # readers switch only once the install committed

    def _append(self, hard_state: HardState | None, entries: tuple[Entry, ...]) -> None:
        """Make a log-only batch durable in the log file (LogFileFull when it
        does not fit); a failure of the disk is handled as ``_commit``'s."""
        record: LogRecord = (
            _encode_hard_state(hard_state) if hard_state is not None else None,
            [(e.index, encode_entry(e)) for e in entries],
        )
        started = time.perf_counter()
        try:
            self._log_file.append(record, self.fault_hook)  # type: ignore[union-attr]
        except Exception as e:  # LogFileFull, as any error but EIO, goes up as it is
            if not is_io_error(e):
                raise
            raise self._io_failure(e) from e
        finally:
            self._append_seconds = time.perf_counter() - started
        self._pending.append((hard_state, entries))
        observe = self.on_commit
        if observe is not None:
            observe(self._append_seconds, True, False)

    def _absorb(self) -> None:
        """Give LMDB what the log file holds, and empty the file: at a clean
        close, so that the db file alone is the whole store at rest. A
        failure leaves the records where they are (read again at opening)."""
        if not self._pending or self._disk_failed is not None:
            return
        try:
            self._write_batch(WriteBatch())
        except Exception as e:
            log.warn("the log file's records stay in it until the next start ({error})", error=e)

    def _write_raft(
        self, txn: lmdb.Transaction, hard_state: HardState | None, entries: tuple[Entry, ...]
    ) -> None:
        if hard_state is not None:
            txn.put(b"hard_state", _encode_hard_state(hard_state), db=self._meta)
        if not entries:
            return
        first = _index_key(entries[0].index)
        cursor = txn.cursor(db=self._log)
        if cursor.last() and cast(bytes, cursor.key()) >= first:
            # A conflicting suffix: delete it before writing the new entries.
            cursor.set_range(first)
            while cursor.delete():
                pass
        cursor.putmulti(
            [(_index_key(e.index), encode_entry(e)) for e in entries], append=True
        )

    def _compact(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> None:
        raw = txn.get(b"snapshot", db=self._meta)
        if raw is not None and _decode_snapshot(cast(bytes, raw)).index >= meta.index:
            return
        cursor = txn.cursor(db=self._log)
        if cursor.first():
            limit = _index_key(meta.index)
            while cast(bytes, cursor.key()) <= limit and cursor.delete():
                pass
        txn.put(b"snapshot", _encode_snapshot(meta), db=self._meta)

    def _install(self, txn: lmdb.Transaction, meta: SnapshotMeta) -> int:
        """Make the staged state active (returns its number); empty the old
        state and the log."""
        raw = txn.get(b"incoming", db=self._meta)
        if raw is None:
            raise StorageError(f"no staged snapshot to install at {meta.index}")
        index, term, _next, _crc, complete = _INCOMING.unpack_from(raw)
        if (index, term) != (meta.index, meta.term) or not complete:
            raise StorageError(f"the staged snapshot is not {meta.index}/{meta.term}, complete")
        active = 1 - self._active
        txn.put(b"kv_active", b"%d" % active, db=self._meta)
        txn.drop(self._kvs[self._active], delete=False)
        txn.drop(self._log, delete=False)
        txn.put(b"snapshot", _encode_snapshot(meta), db=self._meta)
        txn.put(b"applied", _index_key(meta.index), db=self._meta)
        txn.delete(b"incoming", db=self._meta)
        return active

    @contextlib.contextmanager
    def _writing(self) -> Iterator[lmdb.Transaction]:
        """A write transaction committed through ``_commit`` (the fault hook,
        and EIO handling) when the block ends, aborted if it raises."""
        txn = self._env.begin(write=True)
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        self._commit(txn)

    def _stage_begin(self, meta: SnapshotMeta) -> int:
        with self._writing() as txn:
            raw = txn.get(b"incoming", db=self._meta)
            if raw is not None:
                index, term, next_seq, _crc, complete = _INCOMING.unpack_from(raw)
                if (index, term) == (meta.index, meta.term) and not complete:
                    return int(next_seq)
            txn.drop(self._staging, delete=False)
            txn.put(b"incoming", _INCOMING.pack(meta.index, meta.term, 0, 0, 0), db=self._meta)
            return 0

    def _stage_chunk(self, seq: int, records: list[tuple[bytes, bytes]], crc: int, last: bool) -> None:
        with self._writing() as txn:
            raw = txn.get(b"incoming", db=self._meta)
            if raw is None:
                raise StorageError("no snapshot is being received")
            index, term, next_seq, running, complete = _INCOMING.unpack_from(raw)
            if complete or seq != next_seq:
                raise StorageError(f"snapshot chunk {seq} arrived, expected {next_seq}")
            running = record_crc(records, running)
            if running != crc:
                raise StorageError(f"snapshot chunk {seq} is corrupt (CRC mismatch)")
            if records:
                # Records arrive in key order, so appending is both fast and a check.
                txn.cursor(db=self._staging).putmulti(records, append=True)
            txn.put(
                b"incoming", _INCOMING.pack(index, term, seq + 1, running, 1 if last else 0), db=self._meta
            )


def _pages(stat: Any) -> int:
    return int(stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"])
