# test-case-name: tests.raft.test_simulation
"""The cluster configuration: which nodes exist, their addresses, who votes.

A configuration lives in the log as the data of a CONFIG entry (and, later, in
snapshots). A node always uses the latest configuration in its log, committed
or not (Raft thesis §4.1); changes add or remove at most one voter at a time.
"""

from __future__ import annotations

import re

import attrs

from dkv.raft.protowire import LEN, VARINT, WireError, fields, length_delimited, tag, varint

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
    # Derived from members once (the core asks for them on every message).
    _ids: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _voters: frozenset[str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise MembershipError(f"duplicate member id in {ids}")
        object.__setattr__(self, "_ids", frozenset(ids))
        object.__setattr__(self, "_voters", frozenset(m.id for m in self.members if m.voter))

    @property
    def voters(self) -> frozenset[str]:
        return self._voters

    @property
    def learners(self) -> frozenset[str]:
        return self._ids - self._voters

    @property
    def ids(self) -> frozenset[str]:
        return self._ids

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
        """The ``dkv.raft.v0.ClusterConfig`` protobuf bytes (deterministic:
        every node writes the same bytes for the same configuration)."""
        out = []
        for m in self.members:
            body = b""
            if m.id:
                body += length_delimited(1, m.id.encode())
            if m.address:
                body += length_delimited(2, m.address.encode())
            if m.voter:
                body += tag(3, VARINT) + varint(1)
            out.append(length_delimited(1, body))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Read ``ClusterConfig`` bytes; raises MembershipError if they are
        not one (unknown fields are skipped, as protobuf does)."""
        try:
            members = []
            for field, wire_type, value in fields(data):
                if field == 1 and wire_type == LEN:
                    members.append(_decode_member(value))  # type: ignore[arg-type]
            return cls(tuple(members))
        except (WireError, UnicodeDecodeError) as e:
            raise MembershipError(f"not a cluster configuration: {e}") from None


def _decode_member(data: bytes) -> Member:
    node_id, address, voter = "", "", False
    for field, wire_type, value in fields(data):
        if field == 1 and wire_type == LEN:
            node_id = value.decode()  # type: ignore[union-attr]
        elif field == 2 and wire_type == LEN:
            address = value.decode()  # type: ignore[union-attr]
        elif field == 3 and wire_type == VARINT:
            voter = bool(value)
    return Member(node_id, address, voter)


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
