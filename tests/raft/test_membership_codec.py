"""The core encodes cluster configurations without protobuf (it is pure);
the bytes must be exactly protobuf's, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.pb import raft_pb2
from dkv.raft.membership import Member, Membership, MembershipError

TEXT = st.text(max_size=70)
MEMBERS = st.lists(st.builds(Member, TEXT, TEXT, st.booleans()), max_size=6, unique_by=lambda m: m.id)


@settings(max_examples=300, deadline=None)
@given(MEMBERS)
def test_encoding_is_protobufs_deterministic_serialization(members) -> None:
    membership = Membership(tuple(members))
    expected = raft_pb2.ClusterConfig(
        members=[raft_pb2.Member(id=m.id, address=m.address, voter=m.voter) for m in membership.members]
    ).SerializeToString(deterministic=True)
    assert membership.encode() == expected
    assert Membership.decode(expected) == membership


@settings(max_examples=200, deadline=None)
@given(MEMBERS, st.binary(max_size=20))
def test_decoding_skips_fields_it_does_not_know(members, blob) -> None:
    pb = raft_pb2.ClusterConfig(members=[raft_pb2.Member(id=m.id, address=m.address, voter=m.voter) for m in members])
    data = pb.SerializeToString() + b"\x22" + bytes([len(blob)]) + blob  # field 4, bytes: unknown to us
    assert Membership.decode(data) == Membership(tuple(members))


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\x05ab", b"\x08", b"\x0f\x00", b"\x0a\x02\x0a\xff"])
def test_malformed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(MembershipError):
        Membership.decode(data)
