# test-case-name: tests.test_held_apply,tests.test_replication,tests.test_driver_simulation
"""Applied writes the store has not been given yet, held for its next transaction.

A Ready that brings nothing new to make durable -- no entries, no snapshot,
no new term or vote, only committed entries to apply and the commit index
that moved -- needs no transaction of its own. Its entries are on a
majority's disk already, and a node that restarts before their table writes
reach the store applies them again from its log (the store's applied index
says where to start; applying is deterministic). The driver applies such a
Ready to the overlay, answers it and advances at once, and holds its table
writes and hard state here. The next transaction carries them, in order,
before its own: a Ready with entries, a term or vote, a compaction, or, when
none comes in time, a transaction of their own (``ReplicationService``'s
flush). At one connection this is one transaction and one fsync per write
on the leader instead of two: the entry's, then its apply's.

Over a store that keeps its log apart (``NodeStore.log_apart``: LMDB's log
file), a Ready with entries or a new term or vote holds its applied writes
too: its entries and hard state (the newest, held or its own) go to the log
file alone, and the writes wait for the next LMDB transaction, which
carries the log file's records before them. Under load that is one LMDB
transaction per ``HELD_FLUSH_BATCH_SECONDS`` (at a light load, per
``HELD_FLUSH_SECONDS``) instead of one per Raft round.

Holding never loses an acknowledged write: every write answered from here is
committed (in the log of a majority), and nothing that must be durable
before a message leaves is ever held. What a crash can lose is only work:
the apply of the held entries, done again at restart.
"""

from __future__ import annotations

import attrs

from dkv.raft.messages import HardState
from dkv.storage import Applied


@attrs.define
class HeldApply:
    """The held table writes (oldest first) and the newest held hard state."""

    applied: Applied | None = None
    hard_state: HardState | None = None
    #: When the oldest of what is held was held (None: nothing is).
    since: float | None = None

    def __bool__(self) -> bool:
        return self.applied is not None or self.hard_state is not None

    @property
    def writes(self) -> int:
        """How many table writes are held."""
        return len(self.applied.writes) if self.applied is not None else 0

    def hold(self, applied: Applied | None, hard_state: HardState | None, now: float) -> None:
        """Keep applied's writes after those held, and hard_state (newer
        than the one held) for the next transaction; now: the clock's time."""
        if self.since is None:
            self.since = now
        self.applied = _joined(self.applied, applied)
        if hard_state is not None:
            self.hard_state = hard_state

    def take(self, applied: Applied | None, hard_state: HardState | None) -> tuple[Applied | None, HardState | None]:
        """What a transaction made now must carry: the held writes followed
        by applied's, and hard_state (or, when None, the held one). Holds
        nothing afterwards."""
        joined = _joined(self.applied, applied)
        newest = hard_state if hard_state is not None else self.hard_state
        self.applied = self.hard_state = self.since = None
        return joined, newest

    def take_hard_state(self, hard_state: HardState | None) -> HardState | None:
        """What a log-only write made now must carry as hard state:
        hard_state, or, when None, the held one. The writes stay held."""
        newest = hard_state if hard_state is not None else self.hard_state
        self.hard_state = None
        if self.applied is None:
            self.since = None
        return newest

    def put_back(self, applied: Applied | None, hard_state: HardState | None, now: float) -> None:
        """A transaction that took what was held failed (nothing of it was
        stored): hold applied's writes again, before those held since, and
        hard_state unless a newer one is held."""
        if applied is None and hard_state is None:
            return
        if self.since is None:
            self.since = now
        self.applied = _joined(applied, self.applied)
        if self.hard_state is None:
            self.hard_state = hard_state

    def drop_writes(self) -> None:
        """A snapshot is installed: it replaces the state the held writes
        made (its index is past theirs), so they must never reach the store
        after it."""
        self.applied = None
        if self.hard_state is None:
            self.since = None


def _joined(first: Applied | None, then: Applied | None) -> Applied | None:
    if first is None:
        return then
    if then is None:
        return first
    return Applied(then.index, first.writes + then.writes)
