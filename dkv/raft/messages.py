# test-case-name: tests.raft.test_paper,tests.raft.test_simulation
"""Frozen values exchanged between Raft nodes and between the core and its driver.

Every message carries ``frm``, ``to`` and ``term``. The core never sends them
itself: it queues them and the driver (``dkv.replication``) delivers them.
"""

from __future__ import annotations

import enum

import attrs

from dkv.raft.membership import Membership


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONFIG = 1


@attrs.frozen(slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core for NORMAL entries (empty
    data is the leader's no-op); for CONFIG entries it is an encoded
    ``Membership``."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@attrs.frozen(slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves the node."""

    term: int = 0
    vote: str = ""
    commit: int = 0


@attrs.frozen(slots=True)
class SnapshotMeta:
    """A snapshot's position: the state after applying entry ``index`` (of
    ``term``), and the configuration in force there."""

    index: int
    term: int
    membership: Membership = Membership()


@attrs.frozen(slots=True, kw_only=True)
class Message:
    frm: str
    to: str
    term: int


@attrs.frozen(slots=True, kw_only=True)
class RequestVote(Message):
    last_index: int
    last_term: int
    #: A PreVote asks "would you vote for me?" without anybody changing term.
    pre_vote: bool = False
    #: Sent on a leadership transfer: voters ignore their leader lease.
    transfer: bool = False


@attrs.frozen(slots=True, kw_only=True)
class VoteResponse(Message):
    granted: bool
    pre_vote: bool = False


@attrs.frozen(slots=True, kw_only=True)
class AppendEntries(Message):
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    #: The leader's read round when sent; echoed so reads can be confirmed.
    seq: int = 0
    #: No entries, only a new commit index: the follower need not answer.
    commit_only: bool = False


@attrs.frozen(slots=True, kw_only=True)
class AppendResponse(Message):
    success: bool
    #: On success the follower's last index matching the leader; on
    #: rejection the prev_index that failed the consistency check.
    index: int
    #: On rejection: where the leader should look next (fast backtracking).
    hint_index: int = 0
    hint_term: int = 0
    seq: int = 0


@attrs.frozen(slots=True, kw_only=True)
class Heartbeat(Message):
    #: min(leader commit, follower match): never beyond what the follower holds.
    commit: int
    seq: int = 0


@attrs.frozen(slots=True, kw_only=True)
class HeartbeatResponse(Message):
    seq: int = 0


@attrs.frozen(slots=True, kw_only=True)
class Propose(Message):
    """A follower forwards client payloads to its leader."""

    ctx: int
    payloads: tuple[bytes, ...]


@attrs.frozen(slots=True, kw_only=True)
class ProposeRejected(Message):
    """The receiver was not leader: the forwarded payloads were certainly not appended."""

    ctx: int


@attrs.frozen(slots=True, kw_only=True)
class ReadIndexRequest(Message):
    ctx: int


@attrs.frozen(slots=True, kw_only=True)
class ReadIndexResponse(Message):
    ctx: int
    index: int = 0
    ok: bool = True


@attrs.frozen(slots=True, kw_only=True)
class TimeoutNow(Message):
    """Leadership transfer: campaign now, without waiting for a timeout."""


@attrs.frozen(slots=True, kw_only=True)
class NotMember(Message):
    """An answer to a vote request: the sender's committed configuration,
    ``membership``, which holds the changes up to ``config_index``, does not
    list the candidate. A candidate whose own latest configuration is not
    newer (and that ``membership`` really leaves out) was removed, and stops."""

    config_index: int
    membership: Membership = Membership()


@attrs.frozen(slots=True, kw_only=True)
class InstallSnapshot(Message):
    """The leader's state at ``meta`` arrived and is staged on this node.

    Never on the wire: the snapshot itself travels over its own stream
    (dkv.transport.snapshots); the receiving driver steps this into its own
    core, which decides whether to make the staged state the log's base."""

    meta: SnapshotMeta


#: Messages a driver steps into its own core; never sent between nodes.
LOCAL_MESSAGE_TYPES = (InstallSnapshot,)


def depends_on_disk(message: Message) -> bool:
    """A vote, a vote request with a new term, or an append acknowledgement
    promises something about this node's disk (Raft §5.2, §5.3)."""
    if isinstance(message, RequestVote):
        return not message.pre_vote
    if isinstance(message, VoteResponse):
        return message.granted and not message.pre_vote
    return isinstance(message, AppendResponse)
