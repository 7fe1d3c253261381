# test-case-name: tests.raft.test_paper,tests.raft.test_simulation
"""The leader's view of one follower: how far its log matches, what is in flight.

A follower is in one of three states (as in etcd-io/raft):

PROBE
    we do not know where its log matches ours; send one append at a time and
    wait for the answer (or a heartbeat answer) before sending the next;
REPLICATE
    its log matches up to ``match``; stream appends optimistically, advancing
    ``next`` on send, with at most ``max_inflight`` unacknowledged messages;
SNAPSHOT
    it needs entries we compacted; wait until a snapshot reaches it.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "paused",
        "inflight",
        "recent_active",
        "acked_seq",
        "pending_snapshot",
        "sent_commit",
    )

    def __init__(self, next_index: int, match: int = 0) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        #: In PROBE, an append is out and we wait for its answer.
        self.paused = False
        #: Last index of each unacknowledged append, in send order (REPLICATE).
        self.inflight: deque[int] = deque()
        #: Heard from since the last CheckQuorum round.
        self.recent_active = False
        #: Highest read round (seq) this follower acknowledged.
        self.acked_seq = 0
        self.pending_snapshot = 0
        #: The commit index we last told this follower.
        self.sent_commit = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={len(self.inflight)}, paused={self.paused})"
        )

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise after the match.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.paused = False
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """A success answer up to index: returns True if match moved."""
        updated = index > self.match
        if updated:
            self.match = index
            self.paused = False
        if self.next < index + 1:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint_next: int) -> bool:
        """A rejection of the append after ``rejected``: move next back to
        hint_next. Returns False for a stale rejection we already handled."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale: we know it matches further
            self.become_probe()
            self.next = max(self.match + 1, min(hint_next, rejected))
            return True
        if self.next - 1 != rejected:
            return False  # not the answer to the probe we are waiting for
        self.next = max(self.match + 1, min(hint_next, rejected))
        self.paused = False
        return True

    def sent(self, last_index: int, count: int) -> None:
        """An append carrying entries up to last_index went out."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.paused = True

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True
