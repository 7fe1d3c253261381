# test-case-name: tests.test_storage
"""Storage behind one small interface, ``NodeStore``.

A store holds, atomically together: the Raft hard state (term, vote, commit),
the log, the state machine's tables (``dkv.storage.tables``) and the applied
index. One ``write(batch)`` is one durable transaction: the driver puts a
Ready's hard state and entries and the table writes of committed entries into
one batch, so applied state and applied index can never disagree, and one
fsync serves them all.

``MemoryStore`` (tests) and ``LmdbStore`` (the product) implement it.
"""

from __future__ import annotations

import struct
import zlib
from contextlib import AbstractContextManager
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

from dkv.raft.membership import Membership
from dkv.raft.messages import Entry, EntryKind, HardState, SnapshotMeta
from dkv.storage.tables import Tables, WritableTables

#: A write to the tables: (table, key, value); value None deletes the key.
TableWrite = tuple[str, bytes, bytes | None]


class StorageError(Exception):
    """The store cannot be opened or written; the message says why."""


@attrs.frozen
class PersistentState:
    """Everything a node recovers at start-up."""

    cluster_id: str
    hard_state: HardState
    entries: tuple[Entry, ...]
    applied: int
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_membership: Membership = Membership()


@attrs.frozen
class Applied:
    """The table writes of committed entries up to and including ``index``,
    in the order the state machine made them (the last write of a key wins)."""

    index: int
    writes: tuple[TableWrite, ...] = ()


def apply_writes(tables: WritableTables, writes: tuple[TableWrite, ...] | list[TableWrite]) -> None:
    for table, key, value in writes:
        if value is None:
            tables.delete(table, key)
        else:
            tables.put(table, key, value)


@attrs.frozen
class WriteBatch:
    """One durable transaction, done in this order:

    ``install``  make the staged snapshot with this meta the state (it must
                 be complete), drop the whole log, applied = its index;
    ``hard_state``;
    ``entries``  replace the log from ``entries[0].index`` on;
    ``apply``    the table writes of committed entries and the applied
                 index they bring the state to;
    ``compact``  forget log entries up to its index; it becomes the log's base.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    apply: Applied | None = None
    install: SnapshotMeta | None = None
    compact: SnapshotMeta | None = None

    @property
    def log_only(self) -> bool:
        """Whether the batch only appends entries or sets the hard state
        (what a store with a log file writes there, not as a transaction)."""
        return (
            self.apply is None
            and self.install is None
            and self.compact is None
            and (bool(self.entries) or self.hard_state is not None)
        )


class SnapshotReader(Protocol):
    """A consistent view of the applied state, read chunk by chunk."""

    #: The applied index the view holds.
    index: int

    def read(self, seq: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Records of chunk seq (0, 1, ... in order; a chunk already read may
        be read again) and whether it is the last. May block on the disk: call
        it off the reactor thread."""

    def close(self) -> None: ...


class NodeStore(Protocol):
    @property
    def log_apart(self) -> bool:
        """Whether a batch of only entries and hard state is made durable
        apart from the state (a log file): cheaply, and the state's writes
        are best held for a later batch (the driver's ``held_apply``)."""

    def load(self) -> PersistentState | None:
        """The recovered state, or None for an empty store. Called once,
        before serving (it may read the disk on the calling thread)."""

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        """Make an empty store the start of a new cluster: entry 1 is the
        configuration, committed. Called before serving."""

    def write(self, batch: WriteBatch) -> Deferred[None]:
        """Durably commit batch. Writes run one at a time, in call order."""

    def reading(self) -> AbstractContextManager[Tables]:
        """A consistent view of the applied tables, for one reactor turn
        (never blocks on a write): ``with store.reading() as tables: ...``."""

    def size(self) -> tuple[int, int]:
        """(bytes the store takes on disk, bytes of it in use)."""

    def copy(self, fd: int) -> None:
        """Write a consistent, compact copy of the whole store to the file
        descriptor fd. Blocks: call it off the reactor thread."""

    def snapshot_reader(self, chunk_bytes: int) -> SnapshotReader:
        """A consistent view of the applied state, to send to a follower."""

    def stage_begin(self, meta: SnapshotMeta) -> Deferred[int]:
        """Prepare to receive the snapshot meta; fires with the chunk to
        receive next (non-zero when an interrupted transfer of the same
        snapshot can resume)."""

    def stage_chunk(self, seq: int, records: list[tuple[bytes, bytes]], crc: int, last: bool) -> Deferred[None]:
        """Durably stage chunk seq; fails with StorageError when seq is not
        the one expected or the CRC-32 of all records so far is not crc."""

    def initialize(self, cluster_id: str, membership: Membership) -> PersistentState:
        """Make an empty store a member of an existing cluster (a node that
        joins): no log; membership is the configuration it joined. Called
        before serving."""

    def close(self) -> Deferred[None]:
        """Finish queued writes and release the store."""

    def close_now(self) -> None:
        """Release the store at once, without the reactor (start-up failures)."""


def bootstrap_state(cluster_id: str, membership: Membership) -> PersistentState:
    """The state every node of a new cluster starts from, identical on all."""
    return PersistentState(
        cluster_id=cluster_id,
        hard_state=HardState(term=1, vote="", commit=1),
        entries=(Entry(1, 1, EntryKind.CONFIG, membership.encode()),),
        applied=0,
    )


_RECORD_FRAME = struct.Struct(">II")


def record_crc(records: list[tuple[bytes, bytes]], crc: int = 0) -> int:
    """CRC-32 over snapshot records, each framed by its key and value lengths."""
    frame = _RECORD_FRAME
    for key, value in records:
        crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(frame.pack(len(key), len(value)), crc)))
    return crc
