# test-case-name: tests.test_process,tests.test_storage
"""The node's store as a service: opened in ``privilegedStartService`` (after
twistd may have forked: an LMDB environment must not cross a fork) and closed
when the node stops, after everything that uses it.

``StoreService`` is a ``NodeStore`` itself: it hands every call to the store
it opened, so the driver and the other services can be given it when the tree
is built, before there is a store. ``load`` answers with the state recovered
at opening (bootstrapped, joined or read from the db by ``prepare``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from dkv.raft.membership import Membership
from dkv.raft.messages import SnapshotMeta
from dkv.storage import NodeStore, PersistentState, SnapshotReader, WriteBatch
from dkv.storage.tables import Tables


class StoreNotOpen(RuntimeError):
    """The store was used before the service opened it (a wiring bug)."""


class StoreService(Service):
    def __init__(
        self, open_store: Callable[[], NodeStore], prepare: Callable[[NodeStore], PersistentState]
    ) -> None:
        """open_store opens the store (raising ``dkv.errors.StartupError``
        with the reason if it cannot); prepare returns its state, making an
        empty store a node (bootstrap or join) or raising StartupError."""
        self._open_store = open_store
        self._prepare = prepare
        self._store: NodeStore | None = None
        self.state: PersistentState | None = None

    @property
    def store(self) -> NodeStore:
        if self._store is None:
            raise StoreNotOpen("the store is not open")
        return self._store

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        store = self._open_store()
        try:
            self.state = self._prepare(store)
        except BaseException:
            store.close_now()
            raise
        self._store = store

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        store, self._store = self._store, None
        return store.close() if store is not None else succeed(None)

    def close_now(self) -> None:
        """Release the store at once (a later start-up step failed)."""
        store, self._store = self._store, None
        if store is not None:
            store.close_now()

    # -- NodeStore, by delegation -------------------------------------------------

    @property
    def log_apart(self) -> bool:
        return self.store.log_apart

    def load(self) -> PersistentState | None:
        return self.state

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        return self.store.bootstrap(cluster_id, membership)

    def initialize(self, cluster_id: str, membership: Membership) -> PersistentState:
        return self.store.initialize(cluster_id, membership)

    def write(self, batch: WriteBatch) -> Deferred[None]:
        return self.store.write(batch)

    def size(self) -> tuple[int, int]:
        return self.store.size()

    def copy(self, fd: int) -> None:
        self.store.copy(fd)

    def reading(self) -> AbstractContextManager[Tables]:
        return self.store.reading()

    def snapshot_reader(self, chunk_bytes: int) -> SnapshotReader:
        return self.store.snapshot_reader(chunk_bytes)

    def stage_begin(self, meta: SnapshotMeta) -> Deferred[int]:
        return self.store.stage_begin(meta)

    def stage_chunk(self, seq: int, records: list[tuple[bytes, bytes]], crc: int, last: bool) -> Deferred[None]:
        return self.store.stage_chunk(seq, records, crc, last)

    def close(self) -> Deferred[None]:
        return self.stopService()
