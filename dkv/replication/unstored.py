# test-case-name: tests.test_unstored,tests.test_driver_simulation
"""What the driver applied and answered but has not yet handed to the store.

A Ready that brings only committed entries (and, with them, a new commit
index) needs no write before the driver may go on: its entries are already
on this node's disk (in the log, from an earlier Ready) and on a majority's,
the overlay serves their writes, and a commit index need not be durable (a
restarted node learns it again from the leader; etcd does not sync it
either). Writing such a Ready at once would cost a transaction and its
fsyncs, and hold the next Ready's entries behind them: with one client, the
leader's apply of write N delayed the append of write N+1 by a whole commit.

So its table writes wait here, and ride in the next transaction the driver
writes anyway (the next Ready's entries, a vote), or are written on their own
after ``APPLY_STORE_DELAY`` seconds if none comes. Every Ready's applied
writes wait the same way: a Ready's transaction carries the writes that
waited before it and is handed to the store before its own committed entries
are applied, so its fsync runs while they are. Nothing is lost by a crash
meanwhile: the store's applied index is where a restart replays the log from,
and the log up to the commit index is durable and is never compacted past
what the store holds (``dkv.replication.compaction``).
"""

from __future__ import annotations

import attrs

from dkv.raft.messages import HardState
from dkv.storage import Applied

__all__ = ["APPLY_STORE_DELAY", "Unstored", "joined"]

#: The longest the store trails the applied state when no write is due anyway.
APPLY_STORE_DELAY = 0.005


def joined(first: Applied | None, then: Applied | None) -> Applied | None:
    """The writes of first followed by those of then (then's entries come after first's)."""
    if first is None:
        return then
    if then is None:
        return first
    if then.index < first.index:
        raise ValueError(f"applied index {then.index} follows {first.index}")
    return Applied(then.index, first.writes + then.writes)


@attrs.define
class Unstored:
    """Applied writes and the hard state waiting for the next transaction.

    ``durable`` is the term and vote the store holds: a hard state that
    changes either must be written before the messages that depend on it
    leave, so only a commit-index change may wait here. ``since`` is when
    the oldest waiting applied write began to wait (None: none waits)."""

    durable: tuple[int, str] = (0, "")
    applied: Applied | None = None
    hard_state: HardState | None = None
    since: float | None = None

    def may_wait(self, hard_state: HardState | None) -> bool:
        """May a Ready with this hard state (and no entries, snapshot or
        compaction) skip its write?"""
        return hard_state is None or (hard_state.term, hard_state.vote) == self.durable

    def add(self, applied: Applied | None, hard_state: HardState | None, now: float = 0.0) -> None:
        """Applied writes (made after those waiting) and a newer hard state
        wait here; now: the time, to start ``since``."""
        if applied is not None and self.since is None:
            self.since = now
        self.applied = joined(self.applied, applied)
        if hard_state is not None:
            self.hard_state = hard_state

    def take(self, hard_state: HardState | None) -> tuple[Applied | None, HardState | None]:
        """For a transaction now being built: the waiting applied writes, and
        hard_state, else the waiting one. Nothing waits after."""
        out = self.applied, hard_state if hard_state is not None else self.hard_state
        self.applied = self.hard_state = self.since = None
        return out

    def written(self, hard_state: HardState | None) -> None:
        """A transaction carrying hard_state is durable."""
        if hard_state is not None:
            self.durable = (hard_state.term, hard_state.vote)
