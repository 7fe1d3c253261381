# test-case-name: tests.test_peer_queue
"""``PeerQueue``: the Raft messages waiting for one peer's stream, bounded.

A follower that reads slowly (or not at all) must never make its leader
buffer without bound. The core already caps what it sends a follower
(``RaftConfig.max_inflight`` unacknowledged appends, each of at most about
``max_append_bytes``); this queue caps what the transport holds for the
peer, in messages and in bytes (the entry data and payloads a message
carries, plus a small allowance per message and per entry). Pushing past
either bound drops the oldest messages until the queue fits again (a single
message larger than the byte bound is still kept: it is sent alone).

Dropping is safe: Raft tolerates lost messages. The transport reports the
peer unreachable when it drops, so the core goes back to probing it (one
append at a time) and, if the entries it needs were compacted meanwhile,
sends it a snapshot instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from dkv.raft.messages import AppendEntries, Message, Propose

#: What a message costs beyond the data it carries (its header, framing).
MESSAGE_OVERHEAD = 64
#: What each entry of an append costs beyond its data.
ENTRY_OVERHEAD = 24


def message_bytes(message: Message) -> int:
    """About what message takes in memory and on the wire."""
    if type(message) is AppendEntries:
        return MESSAGE_OVERHEAD + sum(len(e.data) + ENTRY_OVERHEAD for e in message.entries)
    if type(message) is Propose:
        return MESSAGE_OVERHEAD + sum(len(p) + ENTRY_OVERHEAD for p in message.payloads)
    return MESSAGE_OVERHEAD


class PeerQueue:
    """Messages for one peer, oldest first, with their byte sizes."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[Message, int]] = deque()
        #: Bytes of the messages queued now.
        self.bytes = 0
        #: Messages dropped since the queue was made.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def push(self, messages: Sequence[Message]) -> list[Message]:
        """Queue messages; returns the (older) messages dropped to stay
        within the bounds, oldest first (never sent)."""
        items = self._items
        for m in messages:
            size = message_bytes(m)
            items.append((m, size))
            self.bytes += size
        dropped: list[Message] = []
        while len(items) > 1 and (len(items) > self.max_messages or self.bytes > self.max_bytes):
            m, size = items.popleft()
            self.bytes -= size
            dropped.append(m)
        self.dropped += len(dropped)
        return dropped

    def pop_batch(self, n: int) -> list[Message]:
        """Up to n of the oldest messages, taken off the queue."""
        items = self._items
        batch = []
        for _ in range(min(n, len(items))):
            m, size = items.popleft()
            self.bytes -= size
            batch.append(m)
        return batch

    def clear(self) -> list[Message]:
        """Empty the queue; returns its messages, oldest first (never sent)."""
        messages = [m for m, _ in self._items]
        self._items.clear()
        self.bytes = 0
        return messages
