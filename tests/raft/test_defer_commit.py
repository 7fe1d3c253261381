"""``RaftConfig.defer_commit``: a commit index that only an empty append
would carry waits for ``flush_commit()`` or for the next append."""

from __future__ import annotations

from dkv.raft import RaftConfig
from dkv.raft.messages import AppendEntries
from tests.raft.sim import Net

IDS = ("n1", "n2", "n3")


def _net() -> Net:
    return Net(IDS, RaftConfig(election_ticks=10, heartbeat_ticks=1, defer_commit=True))


def test_a_commit_index_waits_and_the_flush_sends_it_to_each_follower() -> None:
    net = _net()
    leader = net.elect("n1")
    net.propose("n1", b"a")
    net.deliver_all()
    assert leader.log.committed == leader.log.last_index()
    assert leader.commit_waiting  # nothing new to append: the commit index waits
    assert net.raft("n2").log.committed < leader.log.committed
    leader.flush_commit()
    net.drive("n1")
    sent = net.take(lambda m: isinstance(m, AppendEntries))
    assert sorted(m.to for m in sent) == ["n2", "n3"]
    assert all(m.commit_only and not m.entries and m.commit == leader.log.committed for m in sent)
    assert not leader.commit_waiting


def test_an_append_that_carries_the_commit_index_ends_its_wait() -> None:
    """The next write's append tells the followers the commit index: nothing
    is left waiting, so the driver's flush timer stops and no commit-only
    message is ever sent under a steady trickle of writes."""
    net = _net()
    leader = net.elect("n1")
    net.propose("n1", b"a")
    net.deliver_all()
    assert leader.commit_waiting
    committed = leader.log.committed
    net.propose("n1", b"b")
    net.drive("n1")
    appends = net.take(lambda m: isinstance(m, AppendEntries))
    assert sorted(m.to for m in appends) == ["n2", "n3"]
    assert all(m.entries and m.commit == committed for m in appends)
    assert not leader.commit_waiting
    leader.flush_commit()
    net.drive("n1")
    assert net.take(lambda m: isinstance(m, AppendEntries)) == []
