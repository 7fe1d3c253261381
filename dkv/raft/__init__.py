"""The pure Raft core: no Twisted, no gRPC, no LMDB, no clock, no global random.

See ``dkv.raft.core`` for the contract between the core and its driver.
"""

from dkv.raft.core import (
    NotLeader,
    Outbox,
    ProposalDropped,
    Raft,
    RaftConfig,
    RaftStatus,
    ReadState,
    Ready,
    Role,
)
from dkv.raft.membership import Member, Membership, MembershipError
from dkv.raft.messages import Entry, EntryKind, HardState, Message

__all__ = [
    "Entry",
    "EntryKind",
    "HardState",
    "Member",
    "Membership",
    "MembershipError",
    "Message",
    "NotLeader",
    "Outbox",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftStatus",
    "ReadState",
    "Ready",
    "Role",
]
