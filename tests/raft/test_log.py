"""Unit tests for ``dkv.raft.log.RaftLog``: positions, the §5.3 consistency
check, truncation, conflict hints, and the stable/commit/apply hand-off."""

from __future__ import annotations

import pytest

from dkv.raft.log import LogSafetyError, RaftLog
from dkv.raft.messages import Entry, EntryKind


def ents(*terms: int, start: int = 1, kind: EntryKind = EntryKind.NORMAL) -> list[Entry]:
    """Entries with the given terms at start, start+1, ...; data names them."""
    return [Entry(start + i, t, kind, b"%d@%d" % (start + i, t)) for i, t in enumerate(terms)]


def terms(log: RaftLog) -> list[int]:
    return [log.term(i) or 0 for i in range(log.first_index(), log.last_index() + 1)]


# -- construction and queries -----------------------------------------------------


def test_empty_log_positions() -> None:
    log = RaftLog()
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 0, 0)
    assert log.term(0) == 0  # "before the first entry" matches any prev_index=0 append
    assert log.term(1) is None
    assert log.unstable_entries() == [] and log.next_committed() == []


def test_recovered_entries_are_stable_and_positions_restored() -> None:
    log = RaftLog(ents(1, 1, 2), committed=2, applied=1)
    assert (log.last_index(), log.last_term(), log.stable) == (3, 2, 3)
    assert (log.committed, log.applying, log.applied) == (2, 1, 1)
    assert log.next_committed() == ents(1, 1)[1:2]


def test_construction_rejects_holes_and_commit_beyond_the_log() -> None:
    with pytest.raises(LogSafetyError):
        RaftLog([Entry(1, 1), Entry(3, 1)])
    with pytest.raises(LogSafetyError):
        RaftLog(ents(1), snapshot_index=5)  # must start at 6
    with pytest.raises(LogSafetyError):
        RaftLog(ents(1, 1), committed=3)


def test_term_around_a_snapshot() -> None:
    log = RaftLog(ents(3, 3, start=11), snapshot_index=10, snapshot_term=2, committed=10)
    assert log.first_index() == 11
    assert log.term(10) == 2  # the snapshot's last entry
    assert log.term(9) is None  # compacted
    assert log.term(12) == 3 and log.term(13) is None


def test_slice_keeps_at_least_one_entry_then_respects_max_bytes() -> None:
    big = [Entry(1, 1, data=b"x" * 100), Entry(2, 1, data=b"y" * 100), Entry(3, 1)]
    log = RaftLog(big)
    assert log.slice(1, 4, max_bytes=10) == big[:1]  # one entry even if too big
    assert log.slice(1, 4, max_bytes=250) == big[:2]
    assert log.slice(1, 4) == big
    assert log.slice(2, 99) == big[1:]  # hi is clipped to the log
    compacted = RaftLog(ents(1, start=6), snapshot_index=5, snapshot_term=1)
    with pytest.raises(LogSafetyError):
        compacted.slice(5, 7)


@pytest.mark.parametrize(
    ("last_index", "last_term", "up_to_date"),
    [
        (3, 2, True),  # same last entry
        (4, 2, True),  # same term, longer
        (2, 2, False),  # same term, shorter
        (1, 3, True),  # later term wins whatever the length
        (9, 1, False),  # earlier term loses whatever the length
    ],
)
def test_is_up_to_date_5_4_1(last_index: int, last_term: int, up_to_date: bool) -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the
    log with the later term is more up-to-date. If the logs end with the same
    term, then whichever log is longer is more up-to-date." """
    log = RaftLog(ents(1, 1, 2))
    assert log.is_up_to_date(last_index, last_term) is up_to_date


def test_last_index_of_term() -> None:
    log = RaftLog(ents(1, 2, 2, 4, 4))
    assert log.last_index_of_term(2) == 3
    assert log.last_index_of_term(4) == 5
    assert log.last_index_of_term(3) == 0  # we hold no entry of term 3
    assert log.last_index_of_term(9) == 0


# -- conflict hints (fast backtracking) -------------------------------------------


def test_conflict_hint_for_a_shorter_log_points_past_its_end() -> None:
    log = RaftLog(ents(1, 1, 2))
    assert log.conflict_hint(7) == (4, 0)


def test_conflict_hint_skips_the_whole_conflicting_term() -> None:
    log = RaftLog(ents(1, 2, 3, 3, 3))
    # prev_index 5 holds term 3, which the leader does not have there: the
    # hint is the first index of term 3 here, so the leader can skip it.
    assert log.conflict_hint(5) == (3, 3)
    assert log.conflict_hint(3) == (3, 3)
    assert log.conflict_hint(2) == (2, 2)


def test_conflict_hint_stops_at_the_snapshot() -> None:
    log = RaftLog(ents(3, 3, start=6), snapshot_index=5, snapshot_term=3, committed=5)
    assert log.conflict_hint(7) == (6, 3)  # not before the first index we hold
    assert log.conflict_hint(4) == (6, 0)  # compacted: all of it is committed


# -- append and truncation ----------------------------------------------------------


def test_append_truncates_the_suffix_and_moves_stable_back() -> None:
    log = RaftLog(ents(1, 1, 1, 1))
    log.append(ents(2, 2, start=3))
    assert terms(log) == [1, 1, 2, 2]
    assert log.stable == 2  # 3 and 4 are new: not durable yet
    assert log.unstable_entries() == ents(2, 2, start=3)


def test_append_refuses_to_truncate_committed_entries_or_leave_a_gap() -> None:
    log = RaftLog(ents(1, 1, 1), committed=2)
    with pytest.raises(LogSafetyError):
        log.append(ents(2, start=2))
    with pytest.raises(LogSafetyError):
        log.append(ents(1, start=5))
    assert terms(log) == [1, 1, 1]


def test_truncation_forgets_config_entries_it_removes() -> None:
    log = RaftLog(ents(1) + ents(1, start=2, kind=EntryKind.CONFIG) + ents(1, 1, start=3))
    log.append(ents(1, start=5, kind=EntryKind.CONFIG))
    assert log.config_indexes == [2, 5]
    log.append(ents(2, start=4))
    assert log.config_indexes == [2]
    log.append(ents(3, start=2))
    assert log.config_indexes == []


def test_config_version_moves_whenever_the_config_entries_may_have_changed() -> None:
    """The core keeps the latest configuration until config_version moves."""
    log = RaftLog(ents(1) + ents(1, start=2, kind=EntryKind.CONFIG))
    seen = [log.config_version]

    def moved() -> bool:
        seen.append(log.config_version)
        return seen[-1] != seen[-2]

    log.append(ents(1, 1, start=3))
    assert not moved()  # no config entry added or removed
    log.append(ents(1, start=5, kind=EntryKind.CONFIG))
    assert moved()
    log.append(ents(2, start=5, kind=EntryKind.CONFIG))  # replaced by one at the same index
    assert moved() and log.config_indexes == [2, 5]
    log.append(ents(2, start=5))
    assert moved() and log.config_indexes == [2]
    log.committed = log.applying = log.applied = 3
    log.compact(3, 1)
    assert moved()
    log.restore(10, 3)
    assert moved()


def test_maybe_append_rejects_a_mismatching_prev() -> None:
    log = RaftLog(ents(1, 2))
    assert log.maybe_append(2, 1, 2, ents(2, start=3)) is None
    assert log.maybe_append(5, 2, 5, []) is None  # beyond our log
    assert terms(log) == [1, 2] and log.committed == 0


def test_maybe_append_of_a_stale_duplicate_keeps_later_entries() -> None:
    """A delayed copy of an older append must not cut entries that arrived
    after it: only a conflicting term truncates (§5.3 step 3)."""
    log = RaftLog(ents(1, 1, 1, 1))
    assert log.maybe_append(1, 1, 0, ents(1, start=2)) == 2
    assert terms(log) == [1, 1, 1, 1]
    assert log.stable == 4


def test_maybe_append_truncates_from_the_first_conflict() -> None:
    log = RaftLog(ents(1, 1, 1, 1))
    new = ents(1, 2, 2, start=2)
    assert log.maybe_append(1, 1, 0, new) == 4
    assert terms(log) == [1, 1, 2, 2]
    assert log.stable == 2  # entry 2 (same term, kept) is still durable
    assert log.unstable_entries() == new[1:]


def test_maybe_append_commits_at_most_the_last_new_entry() -> None:
    """The leader's commit may be ahead of what this append proves we hold."""
    log = RaftLog(ents(1, 1, 1, 9))  # entry 4 conflicts with the leader's log
    assert log.maybe_append(2, 1, 10, []) == 2
    assert log.committed == 2  # not 4: our entry 4 may not be the leader's
    assert log.maybe_append(2, 1, 3, ents(1, start=3)) == 3
    assert log.committed == 3
    assert terms(log) == [1, 1, 1, 9]


def test_commit_to_never_goes_back_or_beyond_the_log() -> None:
    log = RaftLog(ents(1, 1, 1))
    assert log.commit_to(2)
    assert not log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(LogSafetyError):
        log.commit_to(4)


# -- the driver hand-off --------------------------------------------------------------


def test_stable_to_marks_the_written_entries_durable() -> None:
    log = RaftLog(ents(1))
    log.append(ents(1, 1, start=2))
    written = log.unstable_entries()
    log.stable_to(written)
    assert log.stable == 3 and log.unstable_entries() == []


def test_stable_to_after_truncation_keeps_replaced_entries_unstable() -> None:
    """A Ready written while a conflicting append replaced part of it: the
    disk holds the old entries 3-4, the log the new ones; only the matching
    prefix (entry 2) became durable, and the new entries must be written."""
    log = RaftLog(ents(1))
    log.append(ents(1, 1, 1, start=2))
    written = log.unstable_entries()  # 2, 3, 4 of term 1 go to disk...
    log.append(ents(2, 2, start=3))  # ...while a new leader replaces 3 and 4
    log.stable_to(written)
    assert log.stable == 2
    assert log.unstable_entries() == ents(2, 2, start=3)


def test_stable_to_after_truncation_of_everything_written() -> None:
    log = RaftLog(ents(1))
    log.append(ents(1, 1, start=2))
    written = log.unstable_entries()
    log.append(ents(2, start=2))
    log.stable_to(written)
    assert log.stable == 1
    assert log.unstable_entries() == ents(2, start=2)


def test_stable_to_of_a_shorter_ready_after_the_log_grew() -> None:
    log = RaftLog(ents(1))
    log.append(ents(1, start=2))
    written = log.unstable_entries()
    log.append(ents(1, 1, start=3))  # appended while the first write was in flight
    log.stable_to(written)
    assert log.stable == 2
    assert log.unstable_entries() == ents(1, 1, start=3)


def test_next_committed_hands_out_each_entry_once() -> None:
    log = RaftLog(ents(1, 1, 1, 1))
    log.commit_to(2)
    first = log.next_committed()
    assert first == ents(1, 1)
    log.applying = first[-1].index  # what Raft.ready() does
    assert log.next_committed() == []
    log.commit_to(4)
    assert log.next_committed() == ents(1, 1, start=3)


def test_compact_only_applied_entries() -> None:
    log = RaftLog(ents(1, 1, 2, 2), committed=4, applied=3)
    with pytest.raises(LogSafetyError):
        log.compact(4, 2)
    log.compact(3, 2)
    assert (log.first_index(), log.last_index(), log.term(3), log.term(2)) == (4, 4, 2, None)
    log.compact(2, 1)  # older than the snapshot: nothing to do
    assert log.first_index() == 4


def test_restore_replaces_everything_with_the_snapshot_position() -> None:
    log = RaftLog(ents(1, 1, 2), committed=1)
    log.restore(10, 3)
    assert (log.first_index(), log.last_index(), log.last_term()) == (11, 10, 3)
    assert (log.stable, log.committed, log.applying, log.applied) == (10, 10, 10, 10)
    assert log.config_indexes == []
