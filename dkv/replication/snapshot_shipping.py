# test-case-name: tests.test_snapshots,tests.test_driver_simulation
"""Snapshot shipping: the leader streams its applied state to followers that
need entries it has compacted (Raft §7).

One transfer per peer at a time. The state sent is a consistent view of the
store at its applied index (which the core's log still covers: compaction
stays ``snapshot_keep`` entries behind). A view is kept a while after a
failed transfer so that the next attempt resumes it (the receiver keeps the
chunks it staged) instead of starting over with a newer one. The outcome is
reported to the core through ``report(peer, ok)``; the shipper never touches
the core itself.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from dkv.logs import logger
from dkv.raft.membership import Membership
from dkv.raft.messages import SnapshotMeta
from dkv.storage import NodeStore
from dkv.transport.snapshots import CHUNK_BYTES, OutgoingSnapshot

#: Sends a snapshot to a peer: (peer, snapshot, leader term) -> fires when the
#: peer staged all of it.
SnapshotSender = Callable[[str, OutgoingSnapshot, int], Deferred]
#: How long a view stays open for a transfer to resume after a failure.
KEEP_SNAPSHOT_SECONDS = 60.0

log = logger("dkv.replication")


class SnapshotShipper:
    def __init__(
        self,
        store: NodeStore,
        sender: SnapshotSender | None,
        clock: IReactorTime,
        report: Callable[[str, bool], None],
    ) -> None:
        """report(peer, ok) is called when a transfer ends (or cannot start),
        unless ``stop`` was called first."""
        self._store = store
        self._sender = sender
        self._clock = clock
        self._report = report
        self._sending: set[str] = set()
        self._kept: dict[str, tuple[OutgoingSnapshot, float]] = {}
        self._stopped = False

    def send(
        self,
        peer: str,
        term: int,
        term_at: Callable[[int], int | None],
        membership_at: Callable[[int], Membership],
    ) -> None:
        """Stream our applied state to peer, as leader of term. term_at and
        membership_at describe the log at the view's index."""
        if peer in self._sending:
            return
        if self._sender is None:
            self._report(peer, False)
            return
        now = self._clock.seconds()
        kept = self._kept.pop(peer, None)
        if kept is not None and kept[1] >= now:
            snap = kept[0]
        else:
            if kept is not None:
                kept[0].reader.close()
            reader = self._store.snapshot_reader(CHUNK_BYTES)
            log_term = term_at(reader.index)
            if log_term is None:
                reader.close()
                self._report(peer, False)
                return
            snap = OutgoingSnapshot(reader, SnapshotMeta(reader.index, log_term, membership_at(reader.index)))
        self._sending.add(peer)
        log.info("sending a snapshot at index {index} to {peer}", index=snap.meta.index, peer=peer)
        self._sender(peer, snap, term).addBoth(self._done, peer, snap)

    def _done(self, result: object, peer: str, snap: OutgoingSnapshot) -> None:
        self._sending.discard(peer)
        ok = not isinstance(result, Failure)
        if self._stopped:
            snap.reader.close()
            return
        if ok:
            snap.reader.close()
            log.info("snapshot at index {index} sent to {peer}", index=snap.meta.index, peer=peer)
        else:
            self._kept[peer] = (snap, self._clock.seconds() + KEEP_SNAPSHOT_SECONDS)
            log.info(
                "sending a snapshot to {peer} failed: {error}",
                peer=peer,
                error=result.getErrorMessage() if isinstance(result, Failure) else result,
            )
        self._report(peer, ok)

    def drop_kept(self) -> None:
        """Close the views kept for resuming (leadership is lost)."""
        for snap, _ in self._kept.values():
            snap.reader.close()
        self._kept.clear()

    def stop(self) -> None:
        """No more reports; transfers under way close their views when they end."""
        self._stopped = True
        self.drop_kept()
