# test-case-name: tests.test_storage
"""Storage behind one small interface, ``NodeStore``.

A store holds, atomically together: the Raft hard state (term, vote, commit),
the log, the key-value state and the applied index. One ``write(batch)`` is one
durable transaction: the driver puts a Ready's hard state and entries and the
committed entries to apply into one batch, so applied state and applied index
can never disagree, and one fsync serves them all.

``MemoryStore`` (tests) and ``LmdbStore`` (the product) implement it.
"""

from __future__ import annotations

from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

from dkv.commands import RequestId
from dkv.raft.membership import Membership
from dkv.raft.messages import Entry, HardState


class StorageError(Exception):
    """The store cannot be opened or written; the message says why."""


@attrs.frozen
class PersistentState:
    """Everything a node recovers at start-up."""

    cluster_id: str
    hard_state: HardState
    entries: tuple[Entry, ...]
    applied: int
    snapshot_index: int = 0
    snapshot_term: int = 0
    snapshot_membership: Membership = Membership()


@attrs.frozen
class WriteBatch:
    """One durable transaction. ``entries`` replace the log from
    ``entries[0].index`` on; ``apply`` are committed entries, applied in
    order after the entries are written (they may be among them)."""

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    apply: tuple[Entry, ...] = ()


class NodeStore(Protocol):
    def load(self) -> PersistentState | None:
        """The recovered state, or None for an empty store. Called once,
        before serving (it may read the disk on the calling thread)."""

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        """Make an empty store the start of a new cluster: entry 1 is the
        configuration, committed. Called before serving."""

    def write(self, batch: WriteBatch) -> Deferred[list[RequestId]]:
        """Durably commit batch; fires with the request ids it applied.
        Writes run one at a time, in call order."""

    def get(self, key: bytes) -> bytes | None:
        """The applied value of key (never blocks on a write)."""

    def close(self) -> Deferred[None]:
        """Finish queued writes and release the store."""

    def close_now(self) -> None:
        """Release the store at once, without the reactor (start-up failures)."""


def bootstrap_state(cluster_id: str, membership: Membership) -> PersistentState:
    """The state every node of a new cluster starts from, identical on all."""
    from dkv.raft.messages import EntryKind

    return PersistentState(
        cluster_id=cluster_id,
        hard_state=HardState(term=1, vote="", commit=1),
        entries=(Entry(1, 1, EntryKind.CONFIG, membership.encode()),),
        applied=0,
    )
