# test-case-name: tests.test_replication
"""``ReplicationService``: the one place that turns the Raft core's decisions into I/O.

It ticks the core from an injected clock, steps received messages into it,
and runs the cycle the core's contract asks for::

    take_outbox()  -> send at once (leader appends, heartbeats, read answers)
    ready()        -> persist hard state + entries and apply committed entries,
                      all in ONE store transaction (one fsync)
                   -> then send the Ready's messages (votes, append acks)
                   -> then answer the clients whose entries were applied
                   -> then advance()

Committed entries are applied to an in-memory overlay over the store and their
writes answered as soon as the Ready is taken (they are on a majority's disk);
the store gets the same operations in that Ready's transaction. A Ready that
installs a snapshot is the exception: nothing of it is applied, answered or
released until the snapshot is in the store, since the overlay would sit on the
state from before the snapshot. The applied index never moves backwards (a
violation stops the node).

Forwarded requests are named by a ctx whose high half is a random incarnation
of this process, so an answer meant for an earlier run of the node never
matches a request of this one.

At most one Ready is being persisted at a time. Everything that arrives in the
meantime (client proposals, peer messages) piles up in the core and goes into
the next Ready: that is the group commit. Client proposals and reads of one
reactor turn also enter the core together (one ``propose``, one
``read_index``), so they share one append and one ReadIndex round.

Deferreds carry results to clients; they never change Raft state: replies,
errors and timeouts from peers become messages stepped into the core.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from dkv.logs import logger
from dkv.commands import RequestId
from dkv.errors import FailedPrecondition, MemberNotFound, NoLeader, OutcomeUnknown
from dkv.raft import NotLeader, Outbox, ProposalDropped, Raft, RaftConfig, RaftStatus, Ready, Role
from dkv.raft.membership import Member, Membership, MembershipError
from dkv.raft.messages import Message
from dkv.raft.messages import SnapshotMeta
from dkv.statemachine import Applied, Overlay, decode_entries
from dkv.storage import NodeStore, PersistentState, WriteBatch
from dkv.transport import Transport
from dkv.transport.snapshots import CHUNK_BYTES, OutgoingSnapshot

#: Sends a snapshot to a peer: (peer, snapshot, leader term) -> fires when the
#: peer staged all of it.
SnapshotSender = Callable[[str, OutgoingSnapshot, int], Deferred]
#: How long a view stays open for a transfer to resume after a failure.
KEEP_SNAPSHOT_SECONDS = 60.0
#: How long the link to a member that left the configuration stays open.
DEPARTED_LINK_SECONDS = 10.0
#: How long a commit index may wait for an append to carry it (defer_commit).
COMMIT_FLUSH_SECONDS = 0.002

log = logger("dkv.replication")


@attrs.define(eq=False)
class _Request:
    """A client request waiting for the cluster, until ``deadline``."""

    deferred: Deferred
    deadline: float
    #: What the client is told at the deadline.
    expired: Callable[[_Request], Exception]
    #: Handed to the core (appended or forwarded): its fate may be unknown.
    proposed: bool = False
    #: A write's request id (to forget it in ``_writes`` when it expires).
    rid: RequestId | None = None
    key: int = 0
    #: What the client is told if the node stops first.
    stopped: Callable[[_Request], Exception] = lambda _: NoLeader("node is shutting down")


def _write_expired(req: _Request) -> Exception:
    return OutcomeUnknown() if req.proposed else NoLeader()


def _read_expired(req: _Request) -> Exception:
    return NoLeader("no leader confirmed the read in time") if req.proposed else NoLeader()


class ReplicationService(Service):
    def __init__(
        self,
        *,
        node_id: str,
        state: PersistentState,
        store: NodeStore,
        transport: Transport,
        clock: IReactorTime,
        raft_config: RaftConfig,
        tick_seconds: float,
        request_timeout: float,
        rng: random.Random,
        first_election_ticks: int | None = None,
        on_fatal: Callable[[Failure], None] = lambda f: None,
        snapshot_entries: int = 10_000,
        snapshot_keep: int = 5_000,
        snapshot_sender: SnapshotSender | None = None,
        on_removed: Callable[[], None] = lambda: None,
        promote_lag: int = 1000,
    ) -> None:
        self.node_id = node_id
        self.cluster_id = state.cluster_id
        self._state = state
        self._store = store
        self._transport = transport
        self._clock = clock
        self._raft_config = raft_config
        self._tick_seconds = tick_seconds
        self._timeout = request_timeout
        self._rng = rng
        self._first_election_ticks = first_election_ticks
        self._on_fatal = on_fatal
        self.raft: Raft | None = None
        #: Random per process start; with a counter it names our requests.
        self.origin = rng.getrandbits(63) | 1
        self._seq = itertools.count(1)
        #: Random per process start: the high half of every ctx we hand the
        #: core (forwarded proposals and reads), so an answer meant for an
        #: earlier run of this node (same id, restarted) matches nothing here.
        self._incarnation = rng.getrandbits(31) | 1
        self._ctx_seq = itertools.count(1)
        self.applied = state.applied
        self._ticker: LoopingCall | None = None
        self._scheduled: IDelayedCall | None = None
        self._persisting: Deferred | None = None
        self._failed: Failure | None = None
        # Requests waiting for this turn's single propose / read_index.
        self._new_writes: list[tuple[RequestId, bytes]] = []
        self._new_reads: list[_Request] = []
        # Requests refused on the way (a forward the leader turned down, a read
        # a deposed leader dropped): retried at the next tick, not at once, so
        # that a node and a peer it wrongly takes for the leader do not bounce
        # them back and forth until it learns better.
        self._retry_writes: list[tuple[RequestId, bytes]] = []
        self._retry_reads: list[_Request] = []
        # Requests in flight.
        self._writes: dict[RequestId, _Request] = {}
        self._forwarded: OrderedDict[int, tuple[float, list[tuple[RequestId, bytes]]]] = OrderedDict()
        self._reads: dict[int, list[_Request]] = {}
        self._apply_waiters: list[tuple[int, int, list[_Request]]] = []
        self._membership: tuple[Membership, Membership] | None = None
        #: Members that left the configuration: id -> (address, keep link until).
        self._departed: dict[str, tuple[str, float]] = {}
        self._soft: tuple[Role, int, str | None] | None = None
        # Compaction: every snapshot_entries applied entries, forget the log
        # up to snapshot_keep entries behind the applied index.
        self._snapshot_entries = snapshot_entries
        self._snapshot_keep = snapshot_keep
        self._compacted_at = state.applied
        self._pending_compact: SnapshotMeta | None = None
        # Snapshots being sent (peer -> transfer) and kept for a retry.
        self._snapshot_sender = snapshot_sender
        self._sending: set[str] = set()
        self._outgoing: dict[str, tuple[OutgoingSnapshot, float]] = {}
        # Membership: learners may be promoted once within promote_lag
        # entries of the commit index; removal from the cluster stops us.
        self._on_removed = on_removed
        self._promote_lag = promote_lag
        self._was_member = False
        self._removed = False
        self._told_removed_at: float | None = None
        self._transfers: list[_Request] = []
        #: Every waiting request, oldest (earliest deadline) first.
        self._expiring: deque[tuple[float, int]] = deque()
        self._pending: dict[int, _Request] = {}
        self._request_keys = itertools.count()
        #: Committed operations answered but not yet in the store.
        self._overlay = Overlay()
        self._installing: SnapshotMeta | None = None
        self._commit_flush: IDelayedCall | None = None

    # -- lifecycle ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        st = self._state
        self.raft = Raft(
            self.node_id,
            self._raft_config,
            self._rng,
            hard_state=st.hard_state,
            entries=st.entries,
            snapshot_index=st.snapshot_index,
            snapshot_term=st.snapshot_term,
            snapshot_membership=st.snapshot_membership,
            applied=st.applied,
            first_election_ticks=self._first_election_ticks,
        )
        self._sync_membership()
        self._check_removed()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self._clock
        self._ticker.start(self._tick_seconds, now=False)
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        for call in (self._scheduled, self._commit_flush):
            if call is not None and call.active():
                call.cancel()
        self._scheduled = self._commit_flush = None
        for rid, _ in self._new_writes + self._retry_writes:
            self._fail_write(rid, NoLeader("node is shutting down"))
        for req in list(self._writes.values()):
            self._finish(req, failure=OutcomeUnknown("node shut down before the write was applied"))
        self._writes.clear()
        for req in self._new_reads + self._retry_reads + [r for rs in self._reads.values() for r in rs]:
            self._finish(req, failure=NoLeader("node is shutting down"))
        for _, _, reqs in self._apply_waiters:
            for req in reqs:
                self._finish(req, failure=req.stopped(req))
        for req in self._transfers:
            self._finish(req, failure=NoLeader("node is shutting down"))
        self._transfers = []
        self._new_writes, self._new_reads, self._reads, self._apply_waiters = [], [], {}, []
        self._retry_writes, self._retry_reads = [], []
        self._expiring.clear()
        self._pending.clear()
        self._drop_outgoing_snapshots()
        if self._persisting is not None:
            d: Deferred[None] = Deferred()
            self._persisting.addBoth(lambda r: (d.callback(None), r)[1])
            return d
        return succeed(None)

    # -- API for the node --------------------------------------------------------

    def next_request_id(self) -> RequestId:
        return RequestId(self.origin, next(self._seq))

    def propose(self, rid: RequestId, payload: bytes) -> Deferred[None]:
        """Fires when the entry carrying rid is committed and applied here.

        While no leader is known (an election, a transfer) the write waits for
        one. Fails with NoLeader when it was certainly not appended anywhere
        (no leader took it by the deadline, or the leader refused it), and
        OutcomeUnknown when it was proposed but not seen applied in time."""
        req = self._new_request(_write_expired)
        if not self.running or self.raft is None:
            self._finish(req, failure=NoLeader("node is not running"))
            return req.deferred
        req.rid = rid
        self._writes[rid] = req
        self._new_writes.append((rid, payload))
        self._schedule()
        return req.deferred

    def read_barrier(self) -> Deferred[None]:
        """Fires when a linearizable read may be served from the local state:
        leadership was confirmed by a quorum after this call (ReadIndex) and
        the read index is applied here. Waits for a leader as ``propose``
        does; fails with NoLeader when none confirms the read in time or the
        leader lost its leadership meanwhile."""
        req = self._new_request(_read_expired)
        if not self.running or self.raft is None:
            self._finish(req, failure=NoLeader("node is not running"))
            return req.deferred
        self._new_reads.append(req)
        self._schedule()
        return req.deferred

    def status(self) -> RaftStatus:
        assert self.raft is not None
        return self.raft.status()

    # -- membership and leadership (leader only; callers forward otherwise) -------

    def _require_leader(self) -> Raft:
        raft = self.raft
        if raft is None or not self.running:
            raise NoLeader("node is not running")
        if raft.role is not Role.LEADER:
            raise NotLeader(raft.leader)
        return raft

    def add_member(self, member: Member) -> Deferred[Membership]:
        """Add member (a learner or a voter); fires once the change is
        committed and applied here. Adding an identical member again succeeds
        at once (a node retrying its join)."""
        raft = self._require_leader()
        current = raft.membership
        existing = current.get(member.id)
        if existing == member:
            return succeed(current)
        if existing is not None:
            raise FailedPrecondition(f"{member.id} is already a member (at {existing.address})")
        if any(m.address == member.address for m in current.members):
            raise FailedPrecondition(f"address {member.address} is already used by another member")
        return self._change(raft, current.add(member))

    def promote_member(self, node_id: str) -> Deferred[Membership]:
        raft = self._require_leader()
        current = raft.membership
        member = current.get(node_id)
        if member is None:
            raise MemberNotFound(f"no member {node_id}")
        if member.voter:
            return succeed(current)
        match = raft.status().match.get(node_id, 0)
        # Caught up: it holds the configuration that made it a learner (so it
        # answers us) and is within promote_lag entries of the commit index.
        added_at = raft.log.config_indexes[-1] if raft.log.config_indexes else 0
        if match < added_at or match + self._promote_lag < raft.log.committed:
            raise FailedPrecondition(
                f"learner {node_id} has not caught up: it holds the log up to {match}, "
                f"the commit index is {raft.log.committed}"
            )
        return self._change(raft, current.promote(node_id))

    def remove_member(self, node_id: str) -> Deferred[Membership]:
        raft = self._require_leader()
        current = raft.membership
        if current.get(node_id) is None:
            raise MemberNotFound(f"no member {node_id}")
        return self._change(raft, current.remove(node_id))

    def _change(self, raft: Raft, new: Membership) -> Deferred[Membership]:
        try:
            index = raft.propose_membership(new)
        except MembershipError as e:
            raise FailedPrecondition(str(e)) from None
        except ProposalDropped as e:
            raise NoLeader(f"no leader ({e})") from None
        term = raft.term
        req = self._new_request(lambda _: OutcomeUnknown())
        req.proposed = True
        req.stopped = lambda _: OutcomeUnknown("node shut down before the change was applied")
        heapq.heappush(self._apply_waiters, (index, self._next_ctx(), [req]))
        self._schedule()

        def check(_: object) -> Membership:
            # Applied up to index: was it our entry that got there?
            assert self.raft is not None
            held = self.raft.log.term(index)
            if held is not None and held != term:
                raise NoLeader("leadership changed before the membership change committed")
            return self.raft.membership_at(index)

        return req.deferred.addCallback(check)

    def transfer_leadership(self, to: str | None) -> Deferred[str]:
        """Hand leadership over; fires with the new leader's id."""
        raft = self._require_leader()
        try:
            target = raft.transfer_leadership(to)
        except MembershipError as e:
            raise FailedPrecondition(str(e)) from None
        if target == self.node_id:
            return succeed(target)
        req = self._new_request(lambda _: NoLeader(f"leadership transfer to {target} did not complete in time"))
        self._transfers.append(req)
        self._schedule()
        return req.deferred

    def receive(self, messages: Sequence[Message]) -> None:
        """Messages from peers (called by the transport)."""
        if self.raft is None or not self.running:
            return
        self._guard(lambda: [self.raft.step(m) for m in messages])  # type: ignore[union-attr]
        self._schedule()

    def unreachable(self, peer: str) -> None:
        if self.raft is not None and self.running:
            self._guard(lambda: self.raft.report_unreachable(peer))  # type: ignore[union-attr]

    # -- the cycle ---------------------------------------------------------------

    def _tick(self) -> None:
        assert self.raft is not None
        self._expire_requests()
        if self._retry_writes:
            self._new_writes[:0], self._retry_writes = self._retry_writes, []
        if self._retry_reads:
            self._new_reads[:0], self._retry_reads = self._retry_reads, []
        self._guard(self.raft.tick)
        self._process()

    def _schedule(self) -> None:
        if self._scheduled is None and self.running:
            self._scheduled = self._clock.callLater(0, self._process)

    def _process(self) -> None:
        self._scheduled = None
        raft = self.raft
        if raft is None or not self.running or self._failed is not None:
            return
        if self._new_writes:
            self._propose_pending(raft)
        if self._new_reads:
            self._read_pending(raft)
        self._deliver(raft.take_outbox())
        if raft.commit_waiting and self._commit_flush is None:
            self._commit_flush = self._clock.callLater(COMMIT_FLUSH_SECONDS, self._flush_commit)
        self._sync_membership()
        self._check_removed()
        self._log_role_change(raft)
        if self._persisting is None and raft.has_ready():
            rd = raft.ready()
            applied = None
            ids: list[RequestId] = []
            if rd.committed:
                applied, ids = decode_entries(rd.committed)
                if rd.snapshot is None:
                    # Committed entries are on a majority's disk already:
                    # apply them to the overlay and answer now; the store gets
                    # the same operations in this batch's transaction.
                    # (Not over a snapshot still to install: the overlay
                    # would sit on the state from before it.)
                    self._overlay.add(applied)
                    self._set_applied(applied.index)
                    self._answer_writes(ids)
                    self._release_apply_waiters()
                    ids = []
            self._installing = rd.snapshot
            batch = WriteBatch(
                rd.hard_state, rd.entries, applied, install=rd.snapshot, compact=self._pending_compact
            )
            self._pending_compact = None
            d = self._store.write(batch)
            self._persisting = d
            d.addCallbacks(self._persisted, self._persist_failed, callbackArgs=(rd, applied, ids))

    def _flush_commit(self) -> None:
        """The commit index held back for the next append: send it now."""
        self._commit_flush = None
        if self.raft is not None and self.running:
            self._guard(self.raft.flush_commit)
            self._process()

    def _answer_writes(self, ids: list[RequestId]) -> None:
        for rid in ids:
            if rid.origin == self.origin:
                req = self._writes.pop(rid, None)
                if req is not None:
                    self._finish(req, result=None)

    def read(self, key: bytes) -> bytes | None:
        """The applied value of key: the overlay, else the store. Raises
        NoLeader once the node is stopping (the store may be closed)."""
        if not self.running:
            raise NoLeader("node is shutting down")
        hit, value = self._overlay.get(key)
        return value if hit else self._store.get(key)

    @property
    def installing_snapshot(self) -> bool:
        """The core accepted a staged snapshot that is not installed yet:
        the staging area must not be reused until it is."""
        return self._installing is not None or (self.raft is not None and self.raft.snapshot_pending)

    def _persisted(self, _: None, rd: Ready, applied: Applied | None, unanswered: list[RequestId]) -> None:
        """rd is durable. Persist -> send -> apply -> advance: the store now
        holds what the overlay had; with a snapshot, it holds the snapshot and
        the entries applied after it, and only now are those answered and
        the reads waiting for them released (``unanswered``)."""
        self._persisting = None
        self._installing = None
        if not self.running or self.raft is None:
            return
        self._transport.send(rd.messages)
        if rd.snapshot is not None:
            log.info("installed a snapshot at index {index}", index=rd.snapshot.index)
            self._overlay.clear()
            self._compacted_at = rd.snapshot.index
            self._set_applied(applied.index if applied is not None else rd.snapshot.index)
            self._answer_writes(unanswered)
            self._release_apply_waiters()
        elif applied is not None:
            self._overlay.stored(applied.index)
        self._guard(lambda: self.raft.advance(rd))  # type: ignore[union-attr]
        self._maybe_compact()
        self._schedule()

    def _next_ctx(self) -> int:
        return (self._incarnation << 32) | (next(self._ctx_seq) & 0xFFFFFFFF)

    def _ours(self, ctx: int) -> bool:
        """Does ctx come from this run of the node (see ``_incarnation``)?"""
        return ctx >> 32 == self._incarnation

    def _set_applied(self, index: int) -> None:
        """The state reads see (overlay over store) now reflects every entry
        up to index. It never moves backwards: a read released at index i
        must never see the state of an index below i afterwards."""
        if index < self.applied:
            try:
                raise AssertionError(f"applied index would move back from {self.applied} to {index}")
            except AssertionError:
                self._internal_error(Failure())
            return
        self.applied = index

    def _maybe_compact(self) -> None:
        """Every snapshot_entries applied entries the applied state (which is
        always durable in the store) becomes the snapshot, and the log up to
        snapshot_keep entries behind it is forgotten; the store forgets it in
        the next write."""
        raft = self.raft
        if raft is None or not self._snapshot_entries:
            return
        if self.applied - self._compacted_at < self._snapshot_entries:
            return
        self._compacted_at = self.applied
        # The store's applied index (the core's): the snapshot is the state
        # the store holds, not the overlay.
        point = raft.log.applied - self._snapshot_keep
        if point > raft.log.snapshot_index:
            self._pending_compact = raft.compact(point)
            log.info(
                "compacted the log up to index {index} (applied {applied})",
                index=point,
                applied=self.applied,
            )
            self._schedule()

    def _persist_failed(self, failure: Failure) -> None:
        self._persisting = None
        self._failed = failure
        log.failure("cannot write to the store; this node stops serving", failure)
        self._on_fatal(failure)

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001
            self._internal_error(Failure())

    def _internal_error(self, failure: Failure) -> None:
        """An internal check failed: stop serving at once (nothing more is
        persisted, sent or answered) and let the node stop."""
        self._failed = failure
        log.failure("an internal check failed; this node stops", failure)
        self._on_fatal(failure)

    def _propose_pending(self, raft: Raft) -> None:
        batch, self._new_writes = self._new_writes, []
        live = [(rid, p) for rid, p in batch if rid in self._writes]
        if not live:
            return
        ctx = self._next_ctx()
        try:
            raft.propose([p for _, p in live], ctx)
        except ProposalDropped:
            # No leader known, or a leadership transfer under way: both pass
            # within an election or so. Hold the writes, ahead of newer ones,
            # and try again next turn; a write no leader took by its deadline
            # fails with NoLeader (it was never proposed).
            self._new_writes[:0] = live
            return
        for rid, _ in live:
            self._writes[rid].proposed = True
        if raft.role is not Role.LEADER:
            now = self._clock.seconds()
            self._forwarded[ctx] = (now, live)
            while self._forwarded:
                first_ctx, (t, _) = next(iter(self._forwarded.items()))
                if now - t <= self._timeout:
                    break
                del self._forwarded[first_ctx]

    def _read_pending(self, raft: Raft) -> None:
        reqs, self._new_reads = [r for r in self._new_reads if not r.deferred.called], []
        if not reqs:
            return
        ctx = self._next_ctx()
        try:
            raft.read_index(ctx)
        except ProposalDropped:
            # No leader known: hold the reads as writes are held.
            self._new_reads[:0] = reqs
            return
        for req in reqs:
            req.proposed = True
        self._reads[ctx] = reqs

    def _deliver(self, out: Outbox) -> None:
        if not out:
            return
        if out.messages:
            self._transport.send(out.messages)
        for rs in out.read_states:
            if not self._ours(rs.ctx):
                log.debug("ignored a read index for an earlier run of this node (ctx {ctx})", ctx=rs.ctx)
                continue
            reqs = self._reads.pop(rs.ctx, None)
            if reqs:
                if rs.index <= self.applied:
                    for req in reqs:
                        self._finish(req, result=None)
                else:
                    heapq.heappush(self._apply_waiters, (rs.index, rs.ctx, reqs))
        for ctx in out.failed_reads:
            if self._ours(ctx):
                self._retry_reads.extend(self._reads.pop(ctx, []))
        for ctx in out.failed_proposals:
            if not self._ours(ctx):
                log.debug("ignored a refusal for an earlier run of this node (ctx {ctx})", ctx=ctx)
                continue
            # Refused, so certainly not appended: no longer "proposed".
            _, refused = self._forwarded.pop(ctx, (0.0, []))
            for rid, payload in refused:
                req = self._writes.get(rid)
                if req is not None:
                    req.proposed = False
                    self._retry_writes.append((rid, payload))
        for peer in out.snapshots_needed:
            self._send_snapshot(peer)

    # -- snapshots ---------------------------------------------------------------

    def _send_snapshot(self, peer: str) -> None:
        """Stream our applied state to peer, then report to the core. A view
        is kept a while after a failure so the transfer can resume."""
        raft = self.raft
        if raft is None or peer in self._sending:
            return
        if self._snapshot_sender is None:
            raft.report_snapshot(peer, False)
            return
        now = self._clock.seconds()
        kept = self._outgoing.pop(peer, None)
        if kept is not None and kept[1] >= now:
            snap = kept[0]
        else:
            if kept is not None:
                kept[0].reader.close()
            reader = self._store.snapshot_reader(CHUNK_BYTES)
            # The view is at the store's applied index, which the core's log
            # still covers (compaction stays snapshot_keep entries behind).
            term = raft.log.term(reader.index)
            if term is None:
                reader.close()
                raft.report_snapshot(peer, False)
                return
            snap = OutgoingSnapshot(reader, SnapshotMeta(reader.index, term, raft.membership_at(reader.index)))
        self._sending.add(peer)
        log.info("sending a snapshot at index {index} to {peer}", index=snap.meta.index, peer=peer)
        d = self._snapshot_sender(peer, snap, raft.term)

        def done(result: object) -> None:
            self._sending.discard(peer)
            ok = not isinstance(result, Failure)
            if ok:
                snap.reader.close()
                log.info("snapshot at index {index} sent to {peer}", index=snap.meta.index, peer=peer)
            else:
                self._outgoing[peer] = (snap, self._clock.seconds() + KEEP_SNAPSHOT_SECONDS)
                log.info(
                    "sending a snapshot to {peer} failed: {error}",
                    peer=peer,
                    error=result.getErrorMessage(),  # type: ignore[union-attr]
                )
            if self.raft is not None and self.running:
                self._guard(lambda: self.raft.report_snapshot(peer, ok))  # type: ignore[union-attr]
                self._schedule()
            else:
                snap.reader.close()

        d.addBoth(done)

    def _drop_outgoing_snapshots(self) -> None:
        for snap, _ in self._outgoing.values():
            snap.reader.close()
        self._outgoing.clear()

    def _release_apply_waiters(self) -> None:
        while self._apply_waiters and self._apply_waiters[0][0] <= self.applied:
            _, _, reqs = heapq.heappop(self._apply_waiters)
            for req in reqs:
                self._finish(req, result=None)

    # -- requests ----------------------------------------------------------------

    def _new_request(self, expired: Callable[[_Request], Exception]) -> _Request:
        """A request that fails with expired(req) unless finished within the
        request timeout. Deadlines are checked on every tick (no timer per
        request): a request ends between timeout - tick and timeout.

        Only unfinished requests stay referenced (in ``_pending``); the
        deadline queue holds plain (deadline, key) tuples, which the garbage
        collector does not track. (It held the requests themselves: at 6k
        writes/s, 30k finished requests and their Deferreds, which made
        young-generation collections take up to 100 ms.)"""
        key = next(self._request_keys)
        deadline = self._clock.seconds() + self._timeout - self._tick_seconds
        req = _Request(Deferred(), deadline, expired, key=key)
        self._pending[key] = req
        self._expiring.append((deadline, key))
        return req

    def _expire_requests(self) -> None:
        now = self._clock.seconds()
        expiring = self._expiring
        while expiring and expiring[0][0] <= now:
            req = self._pending.pop(expiring.popleft()[1], None)
            if req is None or req.deferred.called:
                continue
            if req.rid is not None:
                self._writes.pop(req.rid, None)
            self._finish(req, failure=req.expired(req))

    def _finish(
        self, req: _Request, result: object = None, failure: Exception | None = None
    ) -> None:
        self._pending.pop(req.key, None)
        if req.deferred.called:  # e.g. cancelled because the client went away
            return
        if failure is not None:
            req.deferred.errback(failure)
        else:
            req.deferred.callback(result)

    def _fail_write(self, rid: RequestId, error: Exception) -> None:
        req = self._writes.pop(rid, None)
        if req is not None:
            self._finish(req, failure=error)

    # -- bookkeeping -------------------------------------------------------------

    def _sync_membership(self) -> None:
        """Keep links to the members of the latest configuration and of the
        committed one: until a change commits, a member it removes may still
        be (or talk to) the leader that replicates it."""
        raft = self.raft
        assert raft is not None
        latest = raft.membership
        committed = raft.membership_at(raft.log.committed)
        now = self._clock.seconds()
        expired = [i for i, (_, until) in self._departed.items() if until <= now]
        if (latest, committed) != self._membership or expired:
            addresses = {m.id: m.address for m in committed.members}
            addresses.update((m.id, m.address) for m in latest.members)
            if self._membership is not None:
                # A member that just left keeps its link a while: the messages
                # that tell it it was removed must still reach it.
                for m in self._membership[0].members + self._membership[1].members:
                    if m.id not in addresses and m.id not in self._departed:
                        self._departed[m.id] = (m.address, now + DEPARTED_LINK_SECONDS)
            for i in expired:
                del self._departed[i]
            for i, (address, _) in self._departed.items():
                addresses.setdefault(i, address)
            self._membership = (latest, committed)
            self._transport.set_peers(addresses)

    def _check_removed(self) -> None:
        """Once the applied configuration no longer lists us, we were
        removed: say so once and let the node stop (thesis §4.2.2). So too
        when the leader told us we are no member (NotMember) and no leader
        contacted us for two election timeouts since (a notice can be
        overtaken by a change that added us back)."""
        raft = self.raft
        if raft is None or self._removed:
            return
        applied_membership = raft.membership_at(self.applied)
        if self.node_id in applied_membership.ids:
            self._was_member = True
        if not raft.removed:
            self._told_removed_at = None
        elif self._told_removed_at is None:
            self._told_removed_at = self._clock.seconds()
            log.info("the leader says this node is no member; stopping unless a leader contacts it")
        told = self._told_removed_at is not None and (
            self._clock.seconds() - self._told_removed_at
            >= 2 * self._raft_config.election_ticks * self._tick_seconds
        )
        if told or (
            self._was_member and applied_membership.members and self.node_id not in applied_membership.ids
        ):
            self._removed = True
            log.warn("this node was removed from the cluster; stopping")
            self._on_removed()

    def _log_role_change(self, raft: Raft) -> None:
        soft = (raft.role, raft.term, raft.leader)
        if soft == self._soft:
            return
        old, self._soft = self._soft, soft
        if old is not None and old[0] is soft[0] and old[2] == soft[2]:
            return  # only the term moved (e.g. a failed election)
        if raft.role is not Role.LEADER:
            self._drop_outgoing_snapshots()
            if raft.leader is not None and self._transfers:
                transfers, self._transfers = self._transfers, []
                for req in transfers:
                    self._finish(req, result=raft.leader)
        if raft.role is Role.LEADER:
            log.info("became leader in term {term}", term=raft.term)
        elif raft.leader is not None:
            log.info("following {leader} in term {term}", leader=raft.leader, term=raft.term)
        elif old is not None and old[2] is not None:
            log.info("lost contact with leader {old} (term {term})", old=old[2], term=raft.term)
