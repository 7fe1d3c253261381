# test-case-name: tests.test_replication,tests.test_driver_simulation
"""When to compact the log (Raft §7).

The applied state in the store is always the snapshot, so compacting is only
forgetting log entries: every ``every`` applied entries, the log up to
``keep`` entries behind the store's applied index is dropped (the entries
kept serve followers a little behind without a snapshot). The store forgets
them with its next write.
"""

from __future__ import annotations

import attrs


@attrs.define
class CompactionPolicy:
    #: Compact every this many applied entries (0: never).
    every: int
    #: Entries kept behind the applied index.
    keep: int
    #: The applied index at the last compaction (or snapshot install).
    last: int = 0

    def reset(self, index: int) -> None:
        """A snapshot was installed at index: count from there."""
        self.last = index

    def point(self, applied: int, stored_applied: int, log_base: int) -> int | None:
        """The index to compact up to now, or None. applied: the index the
        node's state reflects; stored_applied: what the store holds (the
        snapshot is the store's state, never the overlay's); log_base: where
        the log starts now."""
        if not self.every or applied - self.last < self.every:
            return None
        point = stored_applied - self.keep
        if point <= log_base:
            return None  # asked again next time (the store's applied index may lag: held writes)
        self.last = applied
        return point
