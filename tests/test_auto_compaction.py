"""Automatic compaction on the leader, on a fake clock with a stand-in node."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from dkv.auto_compaction import REVISION_INTERVAL, AutoCompaction, AutoCompactor
from dkv.raft import Role


@attrs.define
class _Raft:
    role: Role = Role.LEADER


@attrs.define
class _State:
    revision: int
    compact_revision: int = -1


@attrs.define
class _Replication:
    raft: _Raft = attrs.Factory(_Raft)
    running: bool = True
    state: _State = attrs.Factory(lambda: _State(1))

    @contextlib.contextmanager
    def view(self) -> Iterator[_State]:
        yield self.state


@attrs.define
class FakeNode:
    """Just what the compactor uses of a Node."""

    rev: int = 1
    replication: _Replication = attrs.Factory(_Replication)
    compactions: list[int] = attrs.Factory(list)

    def revision(self) -> int:
        self.replication.state.revision = self.rev
        return self.rev

    def write(self, request):
        self.compactions.append(request.revision)
        return succeed(None)


def test_revision_mode_keeps_the_last_n_revisions() -> None:
    clock, node = Clock(), FakeNode(rev=50)
    compactor = AutoCompactor(node, AutoCompaction("revision", 10), clock)  # type: ignore[arg-type]
    compactor.startService()
    clock.advance(REVISION_INTERVAL)
    assert node.compactions == [40]
    clock.advance(REVISION_INTERVAL)  # nothing new
    assert node.compactions == [40]
    node.rev = 100
    node.replication.raft.role = Role.FOLLOWER  # only the leader compacts
    clock.advance(REVISION_INTERVAL)
    assert node.compactions == [40]
    node.replication.raft.role = Role.LEADER
    clock.advance(REVISION_INTERVAL)
    assert node.compactions == [40, 90]
    compactor.stopService()


def test_periodic_mode_drops_history_older_than_the_retention() -> None:
    clock, node = Clock(), FakeNode(rev=5)
    compactor = AutoCompactor(node, AutoCompaction("periodic", 100.0), clock)  # type: ignore[arg-type]
    compactor.startService()
    for step in range(1, 25):  # a sample every 10 s; the revision grows by 10 per sample
        node.rev = 5 + 10 * step
        clock.advance(10)
    # At t=240 the newest sample at least 100 s old was taken at t=140 (revision 145).
    assert node.compactions[-1] == 145
    assert node.compactions == sorted(set(node.compactions))


def test_a_zero_retention_never_compacts() -> None:
    clock, node = Clock(), FakeNode(rev=500)
    AutoCompactor(node, AutoCompaction("periodic", 0), clock).startService()  # type: ignore[arg-type]
    clock.advance(10_000)
    assert node.compactions == []
