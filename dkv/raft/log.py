# test-case-name: tests.raft.test_log
"""The Raft log as the core sees it: all entries after the last snapshot, in memory.

The log is bounded by compaction (snapshots), so the core never reads storage:
the driver hands it the entries it recovered at start-up, and from then on the
core holds the truth and tells the driver what to persist. Three positions
matter besides the last index:

``stable``
    the last index known durable on this node (entries after it are "unstable"
    and appear in the next Ready);
``committed``
    the last index known committed (Raft §5.3);
``applying``
    the last index handed to the driver for applying (``<= committed``).
"""

from __future__ import annotations

from collections.abc import Sequence

from dkv.raft.messages import Entry, EntryKind


class LogSafetyError(AssertionError):
    """An operation would break a Raft invariant (e.g. truncate a committed entry)."""


class RaftLog:
    def __init__(
        self,
        entries: Sequence[Entry] = (),
        *,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        committed: int = 0,
        applied: int = 0,
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._entries: list[Entry] = list(entries)
        for offset, e in enumerate(self._entries):
            if e.index != snapshot_index + 1 + offset:
                raise LogSafetyError(f"entries are not contiguous after {snapshot_index}: {e}")
        #: Indexes of the CONFIG entries we hold, ascending.
        self.config_indexes: list[int] = [e.index for e in self._entries if e.kind == EntryKind.CONFIG]
        #: Moves whenever config_indexes (or an entry at one of them) may
        #: have changed: the core keys what it derives from them by it.
        self.config_version = 0
        self.stable = self.last_index()
        self.committed = max(committed, snapshot_index)
        if self.committed > self.last_index():
            raise LogSafetyError(f"commit {committed} beyond last index {self.last_index()}")
        self.applying = max(applied, snapshot_index)
        self.applied = self.applying
        #: How many times appending replaced a suffix of the log (a new
        #: leader's entries conflicting with an old leader's).
        self.truncations = 0

    # -- queries ---------------------------------------------------------------

    def first_index(self) -> int:
        return self.snapshot_index + 1

    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """The term of the entry at index, or None when it is compacted or absent.
        Index 0 (before the first entry) has term 0."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); at least one, then up to max_bytes of data."""
        if lo <= self.snapshot_index:
            raise LogSafetyError(f"entry {lo} is compacted (snapshot at {self.snapshot_index})")
        hi = min(hi, self.last_index() + 1)
        out = self._entries[lo - self.snapshot_index - 1 : hi - self.snapshot_index - 1]
        if max_bytes is not None and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 24
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up-to-date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def conflict_hint(self, index: int) -> tuple[int, int]:
        """For a rejected append at prev_index=index: (hint_index, hint_term).

        If our log is shorter, hint_term is 0 and hint_index is our last index
        + 1. Otherwise hint_term is our term at index and hint_index the first
        index we hold of that term, so the leader can skip the whole term."""
        if index > self.last_index():
            return self.last_index() + 1, 0
        term = self.term(index)
        if term is None:  # compacted: everything up to the snapshot is committed
            return self.snapshot_index + 1, 0
        first = index
        while first - 1 > self.snapshot_index and self.term(first - 1) == term:
            first -= 1
        return first, term

    def last_index_of_term(self, term: int) -> int:
        """The last index holding an entry of term, or 0 if we hold none."""
        for e in reversed(self._entries):
            if e.term == term:
                return e.index
            if e.term < term:
                break
        return 0

    # -- mutation --------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, truncating any existing suffix from entries[0].index."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise LogSafetyError(f"truncating committed entry {first} (commit {self.committed})")
        if first > self.last_index() + 1:
            raise LogSafetyError(f"gap: appending {first} after {self.last_index()}")
        if first <= self.last_index():
            self.truncations += 1
        del self._entries[first - self.snapshot_index - 1 :]
        self._entries.extend(entries)
        configs = self.config_indexes
        if configs and configs[-1] >= first:
            while configs and configs[-1] >= first:
                configs.pop()
            self.config_version += 1
        added = [e.index for e in entries if e.kind == EntryKind.CONFIG]
        if added:
            configs.extend(added)
            self.config_version += 1
        if self.stable >= first:
            self.stable = first - 1

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Raft §5.3 consistency check and append; returns the last index now
        known to match the leader, or None when prev does not match."""
        if not self.matches(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for e in entries:
            existing = self.term(e.index)
            if existing is None or existing != e.term:
                self.append(entries[e.index - prev_index - 1 :])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise LogSafetyError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    # -- driver hand-off ---------------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.stable - self.snapshot_index :]

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying."""
        return self._entries[
            self.applying - self.snapshot_index : self.committed - self.snapshot_index
        ]

    def stable_to(self, written: Sequence[Entry]) -> None:
        """The driver made ``written`` durable. Entries since replaced by a
        truncation stay unstable: only a suffix that still matches counts."""
        for e in reversed(written):
            if self.term(e.index) == e.term:
                self.stable = max(self.stable, e.index)
                return

    def compact(self, index: int, term: int) -> None:
        """Forget entries up to index (they are in a snapshot)."""
        if index <= self.snapshot_index:
            return
        if index > self.applied:
            raise LogSafetyError(f"compacting {index} beyond applied {self.applied}")
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term
        self.config_indexes = [i for i in self.config_indexes if i > index]
        self.config_version += 1

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log with a snapshot's position (the snapshot is
        newer than anything we hold that matches)."""
        self._entries = []
        self.config_indexes = []
        self.config_version += 1
        self.snapshot_index, self.snapshot_term = index, term
        self.stable = self.committed = self.applying = self.applied = index
