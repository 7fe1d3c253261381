"""A full disk is told apart from other storage failures and said in one
line: at start-up as a StartupError (no traceback), at a write as the one
critical line the node stops with."""

from __future__ import annotations

import errno
import random
from types import SimpleNamespace

import lmdb
import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from dkv.config import NodeConfig
from dkv.disk_full import is_disk_full
from dkv.errors import StartupError
from dkv.node_tree import _open_store, _prepare
from dkv.raft.membership import Member, Membership
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage.memory import MemoryStore
from tests.test_replication import TICK, Network, pump


def test_disk_full_errors_are_recognised() -> None:
    assert is_disk_full(lmdb.DiskError("mdb_txn_commit", errno.ENOSPC))
    assert is_disk_full(lmdb.MapFullError("mdb_put", -30792))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(lmdb.Error("mdb_txn_commit", errno.EIO))
    assert not is_disk_full(ValueError("boom"))


def _config(tmp_path) -> NodeConfig:
    """What these steps read of the configuration: the db path."""
    return SimpleNamespace(db_path=str(tmp_path / "a.db"))  # type: ignore[return-value]


def test_opening_on_a_full_disk_is_one_line(tmp_path, monkeypatch) -> None:
    from dkv.metrics import NodeMetrics
    from dkv.storage.lmdb_store import LmdbStore

    def full(*args, **kwargs):
        raise lmdb.DiskError("mdb_txn_commit", errno.ENOSPC)

    monkeypatch.setattr(LmdbStore, "open", full)
    with pytest.raises(StartupError) as e:
        _open_store(_config(tmp_path), None, NodeMetrics())
    assert "the disk is full" in str(e.value) and "\n" not in str(e.value)


def test_preparing_on_a_full_disk_is_one_line(tmp_path) -> None:
    class FullStore(MemoryStore):
        def load(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StartupError) as e:
        _prepare(_config(tmp_path), FullStore(), None, None)  # type: ignore[arg-type]
    assert str(e.value).startswith(f"db path {tmp_path / 'a.db'}: the disk is full")


def test_a_write_on_a_full_disk_stops_the_node_with_one_line() -> None:
    clock = Clock()
    store = MemoryStore()
    fatal: list = []
    svc = ReplicationService(
        node_id="a",
        state=store.bootstrap("cid", Membership((Member("a", "x:1"),))),
        store=store,
        transport=Network(clock).transport("a"),
        clock=clock,
        rng=random.Random(1),
        on_fatal=fatal.append,
        config=DriverConfig(tick_seconds=TICK, request_timeout=1, first_election_ticks=1),
    )
    store.write = lambda batch: fail(lmdb.DiskError("mdb_txn_commit", errno.ENOSPC))  # type: ignore[method-assign]
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        svc.startService()
        pump(clock, 0.05)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert fatal and fatal[0].check(lmdb.DiskError)
    [line] = [e for e in events if e.get("log_namespace") == "dkv.replication" and "disk is full" in e["log_format"]]
    assert "log_failure" not in line  # no traceback
