"""``PeerQueue``: what the transport holds for one peer stays within its
bounds (messages and bytes); the oldest messages go first; a slow peer makes
the link report it unreachable so the core probes it (and falls back to a
snapshot), never buffer without bound."""

from __future__ import annotations

from dkv.raft.messages import AppendEntries, Entry, Heartbeat, Propose
from dkv.transport.peer_queue import ENTRY_OVERHEAD, MESSAGE_OVERHEAD, PeerQueue, message_bytes


def append(index: int, size: int) -> AppendEntries:
    return AppendEntries(
        frm="a", to="b", term=1, prev_index=index - 1, prev_term=1, entries=(Entry(index, 1, data=b"x" * size),)
    )


def test_a_message_costs_its_data_and_a_small_overhead() -> None:
    assert message_bytes(append(1, 1000)) == MESSAGE_OVERHEAD + 1000 + ENTRY_OVERHEAD
    assert message_bytes(Propose(frm="b", to="a", term=1, ctx=1, payloads=(b"ab", b"cde"))) == (
        MESSAGE_OVERHEAD + 5 + 2 * ENTRY_OVERHEAD
    )
    assert message_bytes(Heartbeat(frm="a", to="b", term=1, commit=0)) == MESSAGE_OVERHEAD


def test_past_the_byte_bound_the_oldest_messages_are_dropped() -> None:
    queue = PeerQueue(max_messages=1000, max_bytes=10_000)
    assert queue.push([append(i, 1000) for i in range(1, 9)]) == []
    dropped = queue.push([append(i, 1000) for i in range(9, 21)])
    assert dropped and queue.dropped == len(dropped)
    # The dropped ones are returned (never sent), oldest first.
    assert [m.entries[0].index for m in dropped] == list(range(1, len(dropped) + 1))
    assert queue.bytes <= 10_000
    kept = queue.pop_batch(100)
    assert [m.entries[0].index for m in kept] == list(range(21 - len(kept), 21))  # the newest survive
    assert queue.bytes == 0 and not queue


def test_past_the_message_bound_the_oldest_are_dropped() -> None:
    queue = PeerQueue(max_messages=3, max_bytes=1 << 20)
    assert [m.entries[0].index for m in queue.push([append(i, 1) for i in range(1, 6)])] == [1, 2]
    assert len(queue) == 3
    assert [m.entries[0].index for m in queue.pop_batch(2)] == [3, 4]
    assert len(queue) == 1


def test_one_message_larger_than_the_bound_is_still_sent() -> None:
    queue = PeerQueue(max_messages=10, max_bytes=100)
    assert queue.push([append(1, 5000)]) == []
    assert len(queue) == 1
    assert [m.entries[0].index for m in queue.push([append(2, 5000)])] == [1]  # the older one goes
    assert queue.pop_batch(10)[0].entries[0].index == 2


def test_memory_stays_bounded_however_much_is_pushed() -> None:
    """A follower that never reads: 20,000 pushes, the queue stays within bounds."""
    queue = PeerQueue(max_messages=4096, max_bytes=1 << 20)
    for i in range(1, 20_001):
        queue.push([append(i, 500)])
        assert queue.bytes <= 1 << 20 and len(queue) <= 4096
    queue.clear()
    assert queue.bytes == 0 and len(queue) == 0


def test_clearing_returns_what_was_queued_oldest_first() -> None:
    """A stream that ended left these unsent: the link returns them to the
    driver (a forward among them is proposed again)."""
    queue = PeerQueue(max_messages=16, max_bytes=1 << 20)
    forward = Propose(frm="b", to="a", term=1, ctx=3, payloads=(b"w",))
    queue.push([append(1, 10), forward])
    assert queue.clear() == [append(1, 10), forward]
    assert queue.bytes == 0 and len(queue) == 0 and queue.clear() == []
