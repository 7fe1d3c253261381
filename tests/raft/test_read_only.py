"""The leader's ReadIndex bookkeeping (thesis §6.4), on its own."""

from __future__ import annotations

from dkv.raft.read_only import PendingRead, ReadIndexTracker


def test_reads_of_one_turn_share_a_round_and_a_later_read_needs_a_new_one() -> None:
    t = ReadIndexTracker()
    t.register("n1", 1, index=5)
    t.register("n2", 2, index=5)
    assert t.seq == 1 and t.round_wanted
    t.round_sent()
    assert t.round_outstanding()
    t.register("n1", 3, index=6)  # arrived after the round went out: acks of it prove nothing
    assert t.seq == 2
    # Round 1 acked by a quorum of three (the leader counts its own round).
    assert t.confirm([2, 1, 0], quorum=2) == [PendingRead(1, 5, "n1", 1), PendingRead(1, 5, "n2", 2)]
    assert not t.round_outstanding()  # round 2 is not sent yet
    t.round_sent()
    assert t.confirm([2, 1, 0], quorum=2) == []
    assert t.confirm([2, 2, 0], quorum=2) == [PendingRead(2, 6, "n1", 3)]
    assert not t


def test_held_reads_wait_for_the_leaders_first_commit_and_all_fail_together() -> None:
    t = ReadIndexTracker()
    t.hold("n2", 7)
    t.register("n1", 8, index=3)
    assert t
    assert t.take_all() == [("n1", 8), ("n2", 7)]
    assert not t and not t.round_wanted
    t.hold("n3", 9)
    assert t.take_held() == [("n3", 9)] and not t


def test_too_few_voters_confirm_nothing() -> None:
    t = ReadIndexTracker()
    t.register("n1", 1, index=1)
    t.round_sent()
    assert t.confirm([1], quorum=2) == []
