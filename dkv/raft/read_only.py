# test-case-name: tests.raft.test_paper,tests.raft.test_read_only
"""The leader's ReadIndex bookkeeping (Raft thesis §6.4), apart from the core.

A linearizable read needs the commit index at the time the read arrived
(its *read index*) and proof that the node was still the leader then: a
quorum answering a round of messages sent after the read arrived. Rounds are
numbered (``seq``); every append and heartbeat carries the current round and
followers echo it back. Many reads share one round, and at most one round is
in flight at a time: reads that arrive while one is in flight wait for the
next, which is sent as soon as the one in flight is confirmed.

Until an entry of the leader's own term is committed, the leader does not
know the commit index of the leaders before it, so reads wait for that
(``hold``).

The tracker only counts; the core decides whom to answer and how.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import attrs


@attrs.frozen(slots=True)
class PendingRead:
    """A read registered in round ``seq`` with read index ``index``, for
    node ``frm`` (the leader itself, or a follower that forwarded it) and
    its context ``ctx``."""

    seq: int
    index: int
    frm: str
    ctx: int


class ReadIndexTracker:
    """Pending reads and read rounds of one leader term. Not thread-safe."""

    def __init__(self) -> None:
        #: The current round; appends and heartbeats carry it.
        self.seq = 0
        #: The current round went out already (a new read starts a fresh one).
        self._seq_sent = True
        #: The highest round carried by a message that went out.
        self._sent_seq = 0
        #: Some read waits for a round that was not sent yet.
        self.round_wanted = False
        self._reads: deque[PendingRead] = deque()
        self._held: list[tuple[str, int]] = []

    def __bool__(self) -> bool:
        return bool(self._reads or self._held)

    def hold(self, frm: str, ctx: int) -> None:
        """Keep a read until the leader commits an entry of its term."""
        self._held.append((frm, ctx))

    def take_held(self) -> list[tuple[str, int]]:
        held, self._held = self._held, []
        return held

    def register(self, frm: str, ctx: int, index: int) -> None:
        """A read with read index ``index``. Acknowledgements of a round sent
        before it arrived prove nothing about now: it joins a fresh round,
        which every read until the next send shares."""
        if self._seq_sent:
            self.seq += 1
            self._seq_sent = False
        self.round_wanted = True
        self._reads.append(PendingRead(self.seq, index, frm, ctx))

    def round_outstanding(self) -> bool:
        """A round was sent for the oldest waiting read and is not confirmed
        yet: new reads wait for it and share the next round."""
        return bool(self._reads) and self._reads[0].seq <= self._sent_seq

    def round_sent(self) -> None:
        """A message carrying the current round went out."""
        self._seq_sent = True
        self._sent_seq = self.seq

    def confirm(self, acked: Iterable[int], quorum: int) -> list[PendingRead]:
        """The reads a quorum confirmed, oldest first: ``acked`` holds the
        highest round each voter (the leader included) acknowledged."""
        if not self._reads:
            return []
        ranked = sorted(acked, reverse=True)
        if len(ranked) < quorum:
            return []
        confirmed = ranked[quorum - 1]
        done = []
        while self._reads and self._reads[0].seq <= confirmed:
            done.append(self._reads.popleft())
        return done

    def take_all(self) -> list[tuple[str, int]]:
        """Every pending and held read, (frm, ctx), for failing them (the
        leadership is lost); the tracker is empty afterwards."""
        pending = [(r.frm, r.ctx) for r in self._reads] + self._held
        self._reads.clear()
        self._held = []
        self.round_wanted = False
        return pending
