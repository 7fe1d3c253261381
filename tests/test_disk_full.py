"""A full disk is told apart from other storage failures and said in one
line: at start-up as a StartupError (no traceback); at a write as one
critical line, after which the node holds its writes (retrying them),
raises the NOSPACE alarm, serves what it applied, and resumes when space is
freed -- without diverging from the other members."""

from __future__ import annotations

import errno
import random
from types import SimpleNamespace

import lmdb
import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.commands import encode_delete
from dkv.config import NodeConfig
from dkv.disk_full import is_disk_full
from dkv.errors import StartupError
from dkv.ids import member_id
from dkv.mvcc.errors import NoSpace
from dkv.node import Node
from dkv.node_tree import _open_store, _prepare
from dkv.pb.etcd_rpc_pb2 import NOSPACE, AlarmRequest
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import HardState
from dkv.replication import DriverConfig, ReplicationService
from dkv.replication.service import DISK_FULL_RETRY_SECONDS, HELD_FLUSH_SECONDS
from dkv.storage.disk_faults import enospc
from dkv.storage.memory import MemoryStore
from tests.test_replication import TICK, Network, leader_of, make, ok, outcome, pump, put, stored


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


class FullableStore(MemoryStore):
    """A MemoryStore whose writes fail as a full disk does while ``full``
    (nothing of the batch is stored), counting the attempts."""

    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__()
        self.full = False
        self.refused = 0
        self.error = error or lmdb.DiskError("mdb_txn_commit", errno.ENOSPC)

    def write(self, batch):
        if self.full:
            self.refused += 1
            return fail(self.error)
        return super().write(batch)


def _one_node(store: MemoryStore, clock: Clock, fatal: list) -> ReplicationService:
    return ReplicationService(
        node_id="a",
        state=store.bootstrap("cid", Membership((Member("a", "x:1"),))),
        store=store,
        transport=Network(clock).transport("a"),
        clock=clock,
        rng=random.Random(1),
        on_fatal=fatal.append,
        config=DriverConfig(tick_seconds=TICK, request_timeout=1, first_election_ticks=1),
    )


def _disk_full_lines(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_namespace") == "dkv.replication" and "disk is full" in e["log_format"]]


@pytest.mark.parametrize(
    "error",
    [lmdb.DiskError("mdb_txn_commit", errno.ENOSPC), lmdb.MapFullError("mdb_put", -30792), enospc()],
    ids=["lmdb-enospc", "map-full", "oserror-enospc"],
)
def test_a_full_disk_holds_the_writes_raises_nospace_and_resumes_when_space_is_freed(error) -> None:
    clock = Clock()
    store = FullableStore(error)
    fatal: list = []
    svc = _one_node(store, clock, fatal)
    node = Node(svc, store)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        svc.startService()
        pump(clock, 0.1)
        before = outcome(put(svc, b"before", b"1"))
        pump(clock, 0.05)
        assert ok(before)
        assert svc.read(b"before") == b"1"

        store.full = True
        pending = outcome(put(svc, b"during", b"2"))  # its entry cannot be stored: never acknowledged
        pump(clock, 3.5)
        assert not fatal and svc.running and svc.disk_full
        assert store.refused >= 3  # tried again every second
        assert len(_disk_full_lines(events)) == 1 and "log_failure" not in _disk_full_lines(events)[0]
        assert len(pending) == 1 and isinstance(pending[0], Failure)  # timed out: outcome unknown, not lost
        # NOSPACE shows locally at once; writes that grow the db are refused
        # before they are proposed; what was applied is still served.
        assert [(a.memberID, a.alarm) for a in node.quota.alarms()] == [(member_id("a"), NOSPACE)]
        assert node.quota.nospace()
        with pytest.raises(NoSpace):
            node.quota.check(10)
        assert svc.read(b"before") == b"1"
        assert svc.read(b"during") is None

        store.full = False  # space was freed
        pump(clock, 1.5)
        assert not svc.disk_full and not fatal
        assert any("has room again" in e["log_format"] for e in events if e.get("log_namespace") == "dkv.replication")
        # The held write went through: the entry the client gave up on is
        # applied, and the replicated alarm (raised while full) is too.
        assert svc.read(b"during") == b"2" and stored(store, b"during") == b"2"
        assert [(a.memberID, a.alarm) for a in node.quota.alarms()] == [(member_id("a"), NOSPACE)]
        disarmed = outcome(
            node.quota.propose(AlarmRequest(action=AlarmRequest.DEACTIVATE, memberID=member_id("a"), alarm=NOSPACE))
        )
        pump(clock, 0.1)
        assert len(disarmed) == 1 and not isinstance(disarmed[0], Failure)
        assert not node.quota.nospace()
        after = outcome(put(svc, b"after", b"3"))
        pump(clock, 0.1)
        assert ok(after) and stored(store, b"after") == b"3"
    finally:
        globalLogPublisher.removeObserver(events.append)
        svc.stopService()


def _three_fullable(clock: Clock, keys: int) -> tuple[dict[str, ReplicationService], dict[str, FullableStore]]:
    """Three members on stores whose disk can be made full, a leader
    elected, and keys k0..k{keys-1} (values v0..) written and applied."""
    stores = {i: FullableStore() for i in ("a", "b", "c")}
    services = make(["a", "b", "c"], clock, Network(clock), stores=stores)
    pump(clock, 0.5)
    leader = leader_of(services)
    for n in range(keys):
        outcome(put(leader, b"k%d" % n, b"v%d" % n))
    pump(clock, 0.2)
    return services, stores


def _delete(svc: ReplicationService, key: bytes) -> list:
    rid = svc.next_request_id()
    return outcome(svc.propose(rid, encode_delete(rid, key)))


def test_a_member_with_a_full_disk_does_not_diverge_from_the_others() -> None:
    """A follower's disk fills: the other two go on committing (its appends
    are not acknowledged while its disk is full); the replicated alarm it
    raises is committed by them, so every member refuses writes that grow
    the db, while deletes go through. Once space is freed it applies the
    same entries in the same order and ends in the same state."""
    clock = Clock()
    services, stores = _three_fullable(clock, keys=5)
    leader = leader_of(services)
    follower = next(i for i, s in services.items() if s is not leader)

    quota = Node(services[follower], stores[follower]).quota  # the node's, from its start
    stores[follower].full = True
    written = [outcome(put(leader, b"while-%d" % n, b"x")) for n in range(3)]
    pump(clock, 0.3)
    assert all(ok(w) for w in written)  # a majority stores them: acknowledged
    assert services[follower].disk_full
    assert quota.nospace()
    pump(clock, 0.5)  # its alarm, forwarded to the leader, commits on the other two
    leader_quota = Node(leader, stores[leader.node_id]).quota
    assert [(a.memberID, a.alarm) for a in leader_quota.alarms()] == [(member_id(follower), NOSPACE)]
    refused = outcome(put(leader, b"grow", b"x"))
    deleted = _delete(leader, b"k0")
    pump(clock, 0.3)
    assert len(refused) == 1 and isinstance(refused[0], Failure) and refused[0].check(NoSpace)
    assert ok(deleted)

    stores[follower].full = False
    pump(clock, 2.0)
    assert not services[follower].disk_full
    applied = {s.applied for s in services.values()}
    assert len(applied) == 1, applied
    for key in (b"k0", b"k1", b"while-0", b"while-2", b"grow"):
        values = {i: stored(stores[i], key) for i in services}
        assert len(set(values.values())) == 1, (key, values)
    assert stored(stores[follower], b"while-2") == b"x" and stored(stores[follower], b"k0") is None
    for s in services.values():
        s.stopService()


def test_a_leader_with_a_full_disk_hands_leadership_over_so_deletes_are_answered() -> None:
    """The leader's disk fills: it could not apply or answer, so it hands
    leadership to a member with room; the new leader answers the deletes
    that free space (the alarm refuses growing writes meanwhile), and once
    space is freed the old leader catches up to the same state."""
    clock = Clock()
    services, stores = _three_fullable(clock, keys=3)
    old = leader_of(services)

    quotas = {i: Node(s, stores[i]).quota for i, s in services.items()}  # each node's, from its start
    stores[old.node_id].full = True
    outcome(put(old, b"stuck", b"x"))  # fills the disk: the leader's batch is refused
    pump(clock, 1.0)
    assert services[old.node_id].disk_full
    new = leader_of(services)
    assert new is not old and not new.disk_full and quotas[old.node_id].nospace()
    deleted = _delete(new, b"k0")
    refused = outcome(put(new, b"grow", b"x"))
    pump(clock, 0.5)
    assert ok(deleted)
    assert [(a.memberID, a.alarm) for a in quotas[new.node_id].alarms()] == [(member_id(old.node_id), NOSPACE)]
    assert len(refused) == 1 and isinstance(refused[0], Failure) and refused[0].check(NoSpace)

    stores[old.node_id].full = False
    pump(clock, 2.0)
    assert not services[old.node_id].disk_full
    assert len({s.applied for s in services.values()}) == 1
    for key in (b"k0", b"k1", b"stuck", b"grow"):
        assert len({stored(stores[i], key) for i in services}) == 1, key
    assert stored(stores[old.node_id], b"k0") is None and stored(stores[old.node_id], b"k1") == b"v1"
    for s in services.values():
        s.stopService()


def test_a_full_lmdb_map_refuses_the_batch_whole_and_a_restart_grows_the_map(tmp_path) -> None:
    """LMDB's map is full (a real ``MapFullError``): the batch is refused
    whole, nothing of it stored, so the driver may hold it and try it again
    (``test_a_full_disk_holds_the_writes...``). LMDB cannot grow the map of
    an environment other threads read; reopening does (``map_size_for``),
    and the very same batch then commits."""
    from twisted.internet import reactor

    from dkv.storage import WriteBatch
    from dkv.storage.lmdb_store import LmdbStore
    from tests.test_storage import MEMBERS, applied, put_entry, value

    path = str(tmp_path / "small.db")
    store = LmdbStore.open(path, reactor, map_size=1 << 20)
    store.bootstrap("cid", MEMBERS)
    index = 2
    refused: WriteBatch | None = None
    while refused is None:
        entries = tuple(put_entry(i, b"key-%d" % i, b"v" * 4000) for i in range(index, index + 20))
        batch = WriteBatch(HardState(2, "", entries[-1].index), entries, applied(store, entries))
        try:
            store._write_batch(batch)
        except lmdb.MapFullError as e:
            assert is_disk_full(e)
            refused = batch
        else:
            index += 20
        assert index < 2000, "the 1 MiB map never filled"
    assert value(store, b"key-%d" % (index - 1)) == b"v" * 4000
    assert value(store, b"key-%d" % index) is None  # nothing of the refused batch
    store.close_now()

    reopened = LmdbStore.open(path, reactor, map_size=1 << 20)
    try:
        reopened._write_batch(refused)
        assert value(reopened, b"key-%d" % (index + 19)) == b"v" * 4000
        assert value(reopened, b"key-2") == b"v" * 4000
    finally:
        reopened.close_now()


class LogApartFullStore(FullableStore):
    """Over a log file: log-only batches always get through (the file is
    preallocated); transactions fail as a full disk while ``full``."""

    def __init__(self) -> None:
        super().__init__()
        self.log_apart = True

    def write(self, batch):
        if batch.log_only:
            return MemoryStore.write(self, batch)
        return super().write(batch)


def test_over_a_log_file_a_refused_flush_does_not_stall_the_log() -> None:
    """The disk refuses the transaction of held writes: the node raises
    NOSPACE and refuses writes that grow the db before proposing them, but
    it keeps its log going (committing, applying, answering reads) and
    stores the held writes once the disk has room again."""
    clock = Clock()
    store = LogApartFullStore()
    fatal: list = []
    svc = _one_node(store, clock, fatal)
    node = Node(svc, store)
    svc.startService()
    pump(clock, 0.1)
    before = outcome(put(svc, b"before", b"1"))
    clock.advance(0)
    assert ok(before) and svc.stored_applied < svc.applied  # its apply held
    store.full = True
    pump(clock, HELD_FLUSH_SECONDS * 2)  # the flush: refused
    assert store.refused == 1 and svc.disk_full and not fatal
    with pytest.raises(NoSpace):
        node.quota.check(10)
    barrier = outcome(svc.read_barrier())
    pump(clock, 0.05)
    assert barrier == [None]  # linearizable reads go on: nothing committed waits to be applied
    assert svc.read(b"before") == b"1"
    rid = svc.next_request_id()
    deleted = outcome(svc.propose(rid, encode_delete(rid, b"before")))  # what frees space still commits
    pump(clock, 0.05)
    assert deleted and not isinstance(deleted[0], Failure) and svc.read(b"before") is None
    pump(clock, DISK_FULL_RETRY_SECONDS)
    assert store.refused == 2  # tried again, once per retry period
    store.full = False
    pump(clock, DISK_FULL_RETRY_SECONDS)
    assert not svc.disk_full and svc.stored_applied == svc.applied
    assert stored(store, b"before") is None  # the delete, stored with the held writes
    disarmed = outcome(
        node.quota.propose(AlarmRequest(action=AlarmRequest.DEACTIVATE, memberID=member_id("a"), alarm=NOSPACE))
    )
    pump(clock, 0.05)
    assert disarmed and not isinstance(disarmed[0], Failure)
    after = outcome(put(svc, b"after", b"2"))
    pump(clock, 0.05)
    assert ok(after)
    svc.stopService()
