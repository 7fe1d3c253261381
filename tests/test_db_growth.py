"""The db file stays bounded under a fixed key set with compaction, and a
snapshot being sent does not pin LMDB pages (``dkv.storage.snapshot_spool``).

Each round rewrites the same keys through the MVCC store, compacts the
history to the current revision and forgets the log up to it, as a node
under the soak's load does; LMDB reuses the pages each round frees unless a
read transaction older than the frees is still open.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted

from dkv.commands import RequestId, encode, encode_put
from dkv.mvcc import MvccView
from dkv.pb.etcd_rpc_pb2 import CompactionRequest
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Entry, EntryKind, HardState, SnapshotMeta
from dkv.statemachine import apply_entries
from dkv.storage import WriteBatch, lmdb_store
from dkv.storage.overlay import Overlay
from dkv.storage.pages import measure_env
from tests.test_storage import open_lmdb, read_all_chunks

MEMBERS = Membership((Member("a", "127.0.0.1:7070"),))
KEYS = 40
VALUE = b"v" * 300
ROUNDS = 60


class Rounds:
    """Rounds of puts over KEYS keys, each ending with a compaction of the
    history and of the log."""

    def __init__(self, store: lmdb_store.LmdbStore) -> None:
        self.store = store
        self.index = 1
        store.bootstrap("cid", MEMBERS)

    async def _apply(self, payloads: list[bytes]) -> None:
        entries = tuple(Entry(self.index + 1 + i, 2, EntryKind.NORMAL, data) for i, data in enumerate(payloads))
        self.index += len(entries)
        with self.store.reading() as tables:
            outcome = apply_entries(entries, Overlay().writer(tables))
        await self.store.write(WriteBatch(HardState(2, "", self.index), entries, outcome.applied))

    async def run(self, n: int) -> None:
        for _ in range(n):
            await self._apply(
                [encode_put(RequestId(7, self.index + 1 + k), b"key-%03d" % k, VALUE) for k in range(KEYS)]
            )
            with self.store.reading() as tables:
                revision = MvccView(tables).revision
            await self._apply([encode(RequestId(7, self.index + 1), CompactionRequest(revision=revision))])
            await self.store.write(WriteBatch(compact=SnapshotMeta(self.index, 2, MEMBERS)))

    def pages(self) -> int:
        """Pages to the db file's high-water mark."""
        return measure_env(self.store._env).high_water


@contextlib.asynccontextmanager
async def warm_store_and_reader(tmp_path) -> AsyncIterator[tuple[lmdb_store.LmdbStore, Rounds, int, Any]]:
    """A store after ROUNDS // 3 rounds, its high-water mark then (pages),
    and a snapshot reader of it (2 KiB chunks); the reader (close is
    idempotent) and the store are closed at the end."""
    store = open_lmdb(str(tmp_path / "n.db"))
    try:
        rounds = Rounds(store)
        await rounds.run(ROUNDS // 3)
        warm = rounds.pages()
        reader = store.snapshot_reader(chunk_bytes=2048)
        try:
            yield store, rounds, warm, reader
        finally:
            reader.close()
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_fixed_key_set_with_compaction_keeps_the_db_bounded(tmp_path) -> None:
    store = open_lmdb(str(tmp_path / "n.db"))
    try:
        rounds = Rounds(store)
        await rounds.run(ROUNDS // 3)
        warm = rounds.pages()
        await rounds.run(ROUNDS)
        assert rounds.pages() <= warm + 16, (warm, rounds.pages())
        accounting = measure_env(store._env)
        tables = {name: n for name, n, _ in accounting.tables}
        # The history holds one change per key (the newest), and the index one each.
        assert tables["mvcc.history"] == KEYS
        assert tables["mvcc.index"] == KEYS
        assert next(t for t in accounting.trees if t.name == "log").entries == 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_snapshot_reader_releases_its_transaction_after_the_first_chunk(tmp_path) -> None:
    async with warm_store_and_reader(tmp_path) as (store, rounds, warm, reader):
        first, last = reader.read(0)
        assert first and not last
        assert not reader.holds_transaction
        assert not measure_env(store._env).readers  # no read transaction pins pages
        await rounds.run(ROUNDS)  # the transfer goes on while the state changes
        assert rounds.pages() <= warm + 16, (warm, rounds.pages())
        # The view is still the one taken: chunk 0 again, and the rest.
        assert reader.read(0) == (first, False)
        assert len(read_all_chunks(reader)) > 1


@pytest_twisted.ensureDeferred
async def test_a_reader_that_holds_its_transaction_grows_the_file(tmp_path, monkeypatch) -> None:
    """The cause the spool removes: with no room to spool, the reader keeps
    its transaction for the transfer, and every page freed meanwhile stays
    unused: the file grows with the writes."""
    monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: 0)
    async with warm_store_and_reader(tmp_path) as (store, rounds, warm, reader):
        first, _ = reader.read(0)
        assert reader.holds_transaction
        assert [r.txnid for r in measure_env(store._env).readers]
        await rounds.run(ROUNDS)
        grown = rounds.pages()
        assert grown > 2 * warm, (warm, grown)
        assert reader.read(0)[0] == first  # still a consistent view
        reader.close()
        # Once it ends, the pages it held are reused: no more growth.
        await rounds.run(ROUNDS)
        assert rounds.pages() <= grown + 16


@pytest_twisted.ensureDeferred
async def test_spooled_and_direct_chunks_are_the_same(tmp_path, monkeypatch) -> None:
    store = open_lmdb(str(tmp_path / "n.db"))
    try:
        await Rounds(store).run(5)
        spooled = store.snapshot_reader(chunk_bytes=1500)
        try:
            chunks_spooled = read_all_chunks(spooled)
            with pytest.raises(ValueError):
                spooled.read(len(chunks_spooled))
        finally:
            spooled.close()
        monkeypatch.setattr(lmdb_store, "free_bytes", lambda path: 0)
        direct = store.snapshot_reader(chunk_bytes=1500)
        try:
            assert read_all_chunks(direct) == chunks_spooled
            assert direct.holds_transaction
        finally:
            direct.close()
        assert len(chunks_spooled) > 3
    finally:
        await store.close()
