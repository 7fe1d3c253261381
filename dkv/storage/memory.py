# test-case-name: tests.test_storage
"""An in-memory ``NodeStore`` for tests: same contract, no disk.

Its state is a ``MemoryTables``; a snapshot's records are ``table name +
NUL + key`` -> value (snapshots travel only between stores of one kind).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

from twisted.internet.defer import Deferred, fail, succeed

from dkv.raft.membership import Membership
from dkv.raft.messages import Entry, HardState, SnapshotMeta
from dkv.storage import PersistentState, StorageError, WriteBatch, apply_writes, bootstrap_state, record_crc
from dkv.storage.tables import MemoryTables


def _records(tables: MemoryTables) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode() + b"\x00" + key, value) for name in tables.tables() for key, value in tables.scan(name)
    ]


def _tables(records: dict[bytes, bytes]) -> MemoryTables:
    tables = MemoryTables()
    for raw, value in records.items():
        name, _, key = raw.partition(b"\x00")
        tables.put(name.decode(), key, value)
    return tables


class MemorySnapshotReader:
    def __init__(self, records: list[tuple[bytes, bytes]], index: int, chunk_records: int) -> None:
        self._records = records
        self.index = index
        self._n = max(1, chunk_records)

    def read(self, seq: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        chunk = self._records[seq * self._n : (seq + 1) * self._n]
        return chunk, (seq + 1) * self._n >= len(self._records)

    def close(self) -> None:
        pass


class MemoryStore:
    def __init__(self, log_apart: bool = False) -> None:
        """log_apart: say so (``NodeStore.log_apart``), for tests of the
        driver's behaviour over a store with a log file; the writes are the
        same either way."""
        self.log_apart = log_apart
        self.cluster_id = ""
        self.hard_state = HardState()
        self.log: dict[int, Entry] = {}
        self.tables = MemoryTables()
        self.applied = 0
        self.snapshot = SnapshotMeta(0, 0)
        self.staging: dict[bytes, bytes] = {}
        #: (index, term, next chunk, crc, complete) of the snapshot being received.
        self.incoming: tuple[int, int, int, int, bool] | None = None
        self.writes = 0

    def load(self) -> PersistentState | None:
        if not self.cluster_id:
            return None
        return PersistentState(
            cluster_id=self.cluster_id,
            hard_state=self.hard_state,
            entries=tuple(self.log[i] for i in sorted(self.log)),
            applied=self.applied,
            snapshot_index=self.snapshot.index,
            snapshot_term=self.snapshot.term,
            snapshot_membership=self.snapshot.membership,
        )

    def _check_empty(self) -> None:
        if self.cluster_id:
            raise StorageError("store is not empty")

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        self._check_empty()
        state = bootstrap_state(cluster_id, membership)
        self.cluster_id = cluster_id
        self.hard_state = state.hard_state
        self.log = {e.index: e for e in state.entries}
        return state

    def initialize(self, cluster_id: str, membership: Membership) -> PersistentState:
        self._check_empty()
        self.cluster_id = cluster_id
        self.snapshot = SnapshotMeta(0, 0, membership)
        return self.load()  # type: ignore[return-value]

    def write(self, batch: WriteBatch) -> Deferred[None]:
        self.writes += 1
        if batch.install is not None:
            meta = batch.install
            if self.incoming is None or self.incoming[:2] != (meta.index, meta.term) or not self.incoming[4]:
                return fail(StorageError(f"no complete staged snapshot {meta.index}/{meta.term}"))
            self.tables, self.staging = _tables(self.staging), {}
            self.log = {}
            self.snapshot = meta
            self.applied = meta.index
            self.incoming = None
        if batch.hard_state is not None:
            self.hard_state = batch.hard_state
        if batch.entries:
            first = batch.entries[0].index
            for i in [i for i in self.log if i >= first]:
                del self.log[i]
            self.log.update((e.index, e) for e in batch.entries)
        if batch.apply is not None:
            apply_writes(self.tables, batch.apply.writes)
            self.applied = batch.apply.index
        if batch.compact is not None and batch.compact.index > self.snapshot.index:
            for i in [i for i in self.log if i <= batch.compact.index]:
                del self.log[i]
            self.snapshot = batch.compact
        return succeed(None)

    @contextlib.contextmanager
    def reading(self) -> Iterator[MemoryTables]:
        yield self.tables

    def size(self) -> tuple[int, int]:
        return 0, 0

    def copy(self, fd: int) -> None:
        """The state's records, each framed by its lengths (tests only)."""
        for key, value in _records(self.tables):
            os.write(fd, struct.pack(">II", len(key), len(value)) + key + value)

    def snapshot_reader(self, chunk_bytes: int) -> MemorySnapshotReader:
        return MemorySnapshotReader(_records(self.tables), self.applied, chunk_bytes // 64)

    def stage_begin(self, meta: SnapshotMeta) -> Deferred[int]:
        if self.incoming is not None and self.incoming[:2] == (meta.index, meta.term) and not self.incoming[4]:
            return succeed(self.incoming[2])
        self.staging = {}
        self.incoming = (meta.index, meta.term, 0, 0, False)
        return succeed(0)

    def stage_chunk(
        self, seq: int, records: list[tuple[bytes, bytes]], crc: int, last: bool
    ) -> Deferred[None]:
        if self.incoming is None or self.incoming[4] or seq != self.incoming[2]:
            expected = None if self.incoming is None else self.incoming[2]
            return fail(StorageError(f"snapshot chunk {seq} arrived, expected {expected}"))
        running = record_crc(records, self.incoming[3])
        if running != crc:
            return fail(StorageError(f"snapshot chunk {seq} is corrupt (CRC mismatch)"))
        self.staging.update(records)
        self.incoming = (self.incoming[0], self.incoming[1], seq + 1, running, last)
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def close_now(self) -> None:
        pass
