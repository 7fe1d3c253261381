"""A node removed while it could not hear about it learns it when it
campaigns: members whose committed configuration leaves it out say so."""

from __future__ import annotations

import random

from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Entry, EntryKind, HardState, NotMember, RequestVote

ABC = Membership(tuple(Member(i, f"{i}:1") for i in "abc"))
AB = Membership(tuple(Member(i, f"{i}:1") for i in "ab"))


def node(node_id: str, entries: list[Entry], commit: int):
    from dkv.raft import Raft

    return Raft(
        node_id, RaftConfig(), random.Random(1), hard_state=HardState(2, "", commit), entries=entries, applied=commit
    )


LOG_WITH_REMOVAL = [
    Entry(1, 1, EntryKind.CONFIG, ABC.encode()),
    Entry(2, 2),
    Entry(3, 2, EntryKind.CONFIG, AB.encode()),
]


def vote_request(frm: str, to: str) -> RequestVote:
    return RequestVote(frm=frm, to=to, term=3, last_index=2, last_term=2, pre_vote=True)


def leader(node_id: str, entries: list[Entry], commit: int):
    raft = node(node_id, entries, commit)
    raft._become_leader()
    raft.take_outbox()
    return raft


def test_leader_tells_a_removed_candidate() -> None:
    a = leader("a", LOG_WITH_REMOVAL, commit=3)
    a.step(vote_request("c", "a"))
    notices = [m for m in a.take_outbox().messages if isinstance(m, NotMember)]
    assert notices == [NotMember(frm="a", to="c", term=a.term, config_index=3, membership=AB)]
    # A follower does not tell: it may not know of a later change re-adding c.
    b = node("b", LOG_WITH_REMOVAL, commit=3)
    b.step(vote_request("c", "b"))
    assert not [m for m in b.take_outbox().messages if isinstance(m, NotMember)]


def test_no_notice_while_the_change_is_uncommitted_or_for_members() -> None:
    a = leader("a", LOG_WITH_REMOVAL, commit=2)  # removal of c not committed: c still counts
    a.step(vote_request("c", "a"))
    assert not [m for m in a.take_outbox().messages if isinstance(m, NotMember)]
    b = leader("b", LOG_WITH_REMOVAL, commit=3)
    b.step(vote_request("a", "b"))
    assert not [m for m in b.take_outbox().messages if isinstance(m, NotMember)]


def test_removed_node_stops_campaigning() -> None:
    c = node("c", LOG_WITH_REMOVAL[:2], commit=2)  # never got the removal
    for _ in range(40):
        c.tick()
    assert c.role is Role.PRE_CANDIDATE
    c.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=AB))
    assert c.removed and c.role is Role.FOLLOWER
    c.take_outbox()
    for _ in range(60):
        c.tick()
    assert c.role is Role.FOLLOWER and not c.take_outbox().messages


def test_a_stale_notice_is_ignored() -> None:
    """c was re-added (config at 5) after a removal at 3: a member that only
    knows the removal must not stop it."""
    readded = Membership(tuple(Member(i, f"{i}:1") for i in "abc"))
    c = node("c", LOG_WITH_REMOVAL + [Entry(4, 2), Entry(5, 2, EntryKind.CONFIG, readded.encode())], commit=5)
    c.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=AB))
    assert not c.removed
    # Nor one from a leader of an older term.
    c2 = node("c", LOG_WITH_REMOVAL[:2], commit=2)
    c2.term = 4
    c2.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=AB))
    assert not c2.removed


def test_contact_from_a_leader_clears_a_notice() -> None:
    """A notice can be overtaken by a change that added the node back: a
    leader replicating to it means it is wanted (again)."""
    from dkv.raft.messages import Heartbeat

    c = node("c", LOG_WITH_REMOVAL[:2], commit=2)
    c.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=AB))
    assert c.removed
    c.step(Heartbeat(frm="a", to="c", term=3, commit=2))
    assert not c.removed


def test_a_notice_whose_configuration_lists_the_node_is_ignored() -> None:
    """The node stops only when it is certain the latest configuration it
    knows of leaves it out: it checks the configuration the leader sent."""
    c = node("c", LOG_WITH_REMOVAL[:2], commit=2)
    c.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=ABC))
    assert not c.removed
    c.step(NotMember(frm="a", to="c", term=3, config_index=3))  # no configuration: proves nothing
    assert not c.removed
    c.step(NotMember(frm="a", to="c", term=3, config_index=3, membership=AB))
    assert c.removed and c.latest_known_membership() == (3, AB)
