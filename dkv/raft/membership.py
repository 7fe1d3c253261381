# test-case-name: tests.raft.test_simulation
"""The cluster configuration: which nodes exist, their addresses, who votes.

A configuration lives in the log as the data of a CONFIG entry (and, later, in
snapshots). A node always uses the latest configuration in its log, committed
or not (Raft thesis §4.1); changes add or remove at most one voter at a time.
"""

from __future__ import annotations

import re

import attrs

from dkv.pb import raft_pb2

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class MembershipError(ValueError):
    """A membership change that would be unsafe or makes no sense."""


@attrs.frozen(slots=True)
class Member:
    id: str
    address: str
    voter: bool = True


def _sorted_members(members: tuple[Member, ...] | list[Member]) -> tuple[Member, ...]:
    return tuple(sorted(members, key=lambda m: m.id))


@attrs.frozen(slots=True)
class Membership:
    """An immutable set of members, kept sorted by id so that encoding is
    deterministic (every bootstrapping node must write identical bytes)."""

    members: tuple[Member, ...] = attrs.field(converter=_sorted_members, default=())

    def __attrs_post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise MembershipError(f"duplicate member id in {ids}")

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> frozenset[str]:
        return frozenset(m.id for m in self.members if not m.voter)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.members)

    def get(self, node_id: str) -> Member | None:
        for m in self.members:
            if m.id == node_id:
                return m
        return None

    def is_voter(self, node_id: str) -> bool:
        m = self.get(node_id)
        return m is not None and m.voter

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def add(self, member: Member) -> Membership:
        if self.get(member.id) is not None:
            raise MembershipError(f"{member.id} is already a member")
        return Membership(self.members + (member,))

    def remove(self, node_id: str) -> Membership:
        if self.get(node_id) is None:
            raise MembershipError(f"{node_id} is not a member")
        return Membership(tuple(m for m in self.members if m.id != node_id))

    def promote(self, node_id: str) -> Membership:
        m = self.get(node_id)
        if m is None:
            raise MembershipError(f"{node_id} is not a member")
        if m.voter:
            raise MembershipError(f"{node_id} is already a voter")
        return Membership(
            tuple(attrs.evolve(x, voter=True) if x.id == node_id else x for x in self.members)
        )

    def encode(self) -> bytes:
        return raft_pb2.ClusterConfig(
            members=[
                raft_pb2.Member(id=m.id, address=m.address, voter=m.voter) for m in self.members
            ]
        ).SerializeToString(deterministic=True)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        pb = raft_pb2.ClusterConfig.FromString(data)
        return cls(tuple(Member(m.id, m.address, m.voter) for m in pb.members))


def check_single_change(old: Membership, new: Membership) -> None:
    """Raise unless new differs from old by at most one voter (thesis §4.1):
    any majority of old and any majority of new then overlap."""
    changed = old.voters ^ new.voters
    if len(changed) > 1:
        raise MembershipError(
            f"a configuration change may add or remove one voter at a time, not {sorted(changed)}"
        )
    if not new.voters:
        raise MembershipError("a cluster needs at least one voter")
