"""The leader's lessor on a fake clock: expiry proposes a revoke, keep-alive
renews, a new leader gives every lease its full TTL again, a follower keeps
no deadlines and expires nothing."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from dkv.errors import NoLeader
from dkv.lessor import Lessor, NotLeading


class Proposals:
    def __init__(self) -> None:
        self.revoked: list[int] = []
        self.failing = False

    def __call__(self, lease_id: int) -> Deferred:
        self.revoked.append(lease_id)
        return fail(NoLeader()) if self.failing else succeed(None)


def make(extend: float = 0.0) -> tuple[Clock, Lessor, Proposals]:
    clock = Clock()
    proposals = Proposals()
    return clock, Lessor(clock, proposals, extend=extend, check_seconds=0.5, retry_seconds=3.0), proposals


def test_an_expired_lease_is_revoked_through_a_proposal_once() -> None:
    clock, lessor, proposals = make()
    lessor.promote([(1, 10), (2, 20)])
    clock.advance(9.5)
    assert proposals.revoked == []
    assert lessor.remaining(1) == 0  # 0.5 s left, rounded down
    clock.advance(0.5)
    assert proposals.revoked == [1]
    assert lessor.keep_alive(1) == 0  # expired: being revoked
    clock.advance(1.0)
    assert proposals.revoked == [1]  # not proposed again before the retry interval
    lessor.revoked(1)  # the revoke was applied
    clock.advance(20)
    assert proposals.revoked == [1, 2]
    assert lessor.remaining(1) is None


def test_a_failed_revoke_is_proposed_again() -> None:
    clock, lessor, proposals = make()
    proposals.failing = True
    lessor.promote([(1, 2)])
    clock.advance(2)
    clock.advance(3)
    assert proposals.revoked == [1, 1]


def test_keep_alive_resets_the_deadline_to_now_plus_ttl() -> None:
    clock, lessor, proposals = make()
    lessor.promote([(7, 10)])
    for _ in range(5):
        clock.advance(8)
        assert lessor.keep_alive(7) == 10
        assert lessor.remaining(7) == 10
    clock.advance(9.5)
    assert proposals.revoked == []
    clock.advance(0.5)
    assert proposals.revoked == [7]
    assert lessor.keep_alive(404) == 0 and lessor.remaining(404) is None


def test_a_new_leader_gives_every_lease_its_full_ttl_plus_extend() -> None:
    clock, lessor, proposals = make(extend=1.0)
    lessor.promote([(1, 5)])
    clock.advance(4)
    lessor.demote()  # lost leadership with 1 s left
    clock.advance(10)
    assert proposals.revoked == []
    lessor.promote([(1, 5)])
    assert lessor.remaining(1) == 6
    clock.advance(5.5)
    assert proposals.revoked == []
    clock.advance(0.5)
    assert proposals.revoked == [1]


def test_a_follower_keeps_no_deadlines_and_expires_nothing() -> None:
    clock, lessor, proposals = make()
    lessor.granted(1, 5)  # applied on a follower: no deadline
    with pytest.raises(NotLeading):
        lessor.keep_alive(1)
    with pytest.raises(NotLeading):
        lessor.remaining(1)
    clock.advance(100)
    assert proposals.revoked == []
    lessor.promote([(1, 5)])
    lessor.demote()
    clock.advance(100)
    assert proposals.revoked == [] and not lessor.leading


def test_a_lease_granted_while_leading_gets_its_deadline() -> None:
    clock, lessor, proposals = make()
    lessor.promote([])
    clock.advance(3)
    lessor.granted(9, 4)
    assert lessor.remaining(9) == 4
    clock.advance(4)
    assert proposals.revoked == [9]


def test_keep_alive_touches_only_its_own_lease() -> None:
    clock, lessor, _ = make()
    lessor.promote([(i, 60) for i in range(1, 10_001)])
    heap_before = list(lessor._heap)
    for _ in range(3):
        lessor.keep_alive(5)
    assert lessor._heap == heap_before  # O(1): no heap push, no scan
