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
from collections import OrderedDict
from collections.abc import Callable, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from dkv.logs import logger
from dkv.commands import RequestId
from dkv.errors import NoLeader, OutcomeUnknown
from dkv.raft import Outbox, ProposalDropped, Raft, RaftConfig, RaftStatus, Ready, Role
from dkv.raft.membership import Membership
from dkv.raft.messages import Message
from dkv.storage import NodeStore, PersistentState, WriteBatch
from dkv.transport import Transport

log = logger("dkv.replication")


@attrs.define(eq=False)
class _Request:
    deferred: Deferred
    timer: IDelayedCall | None = None
    #: Handed to the core (appended or forwarded): its fate may be unknown.
    proposed: bool = False


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
        self._ctx = itertools.count(1)
        self.applied = state.applied
        self._ticker: LoopingCall | None = None
        self._scheduled: IDelayedCall | None = None
        self._persisting: Deferred | None = None
        self._failed: Failure | None = None
        # Requests waiting for this turn's single propose / read_index.
        self._new_writes: list[tuple[RequestId, bytes]] = []
        self._new_reads: list[_Request] = []
        # Requests in flight.
        self._writes: dict[RequestId, _Request] = {}
        self._forwarded: OrderedDict[int, tuple[float, list[RequestId]]] = OrderedDict()
        self._reads: dict[int, list[_Request]] = {}
        self._apply_waiters: list[tuple[int, int, list[_Request]]] = []
        self._membership: Membership | None = None
        self._soft: tuple[Role, int, str | None] | None = None

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
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self._clock
        self._ticker.start(self._tick_seconds, now=False)
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        for rid, _ in self._new_writes:
            self._fail_write(rid, NoLeader("node is shutting down"))
        for req in list(self._writes.values()):
            self._finish(req, failure=OutcomeUnknown("node shut down before the write was applied"))
        self._writes.clear()
        for req in self._new_reads + [r for rs in self._reads.values() for r in rs]:
            self._finish(req, failure=NoLeader("node is shutting down"))
        for _, _, reqs in self._apply_waiters:
            for req in reqs:
                self._finish(req, failure=NoLeader("node is shutting down"))
        self._new_writes, self._new_reads, self._reads, self._apply_waiters = [], [], {}, []
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

        Fails with NoLeader when it was certainly not appended anywhere, and
        OutcomeUnknown when it was proposed but not seen applied in time."""
        req = self._new_request()
        if not self.running or self.raft is None:
            self._finish(req, failure=NoLeader("node is not running"))
            return req.deferred
        self._writes[rid] = req
        req.timer = self._clock.callLater(self._timeout, self._expire_write, rid)
        self._new_writes.append((rid, payload))
        self._schedule()
        return req.deferred

    def read_barrier(self) -> Deferred[None]:
        """Fires when a linearizable read may be served from the local state:
        leadership was confirmed by a quorum after this call (ReadIndex) and
        the read index is applied here. Fails with NoLeader otherwise."""
        req = self._new_request()
        if not self.running or self.raft is None:
            self._finish(req, failure=NoLeader("node is not running"))
            return req.deferred
        req.timer = self._clock.callLater(
            self._timeout, self._finish, req, None, NoLeader("no leader confirmed the read in time")
        )
        self._new_reads.append(req)
        self._schedule()
        return req.deferred

    def status(self) -> RaftStatus:
        assert self.raft is not None
        return self.raft.status()

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
        self._sync_membership()
        self._log_role_change(raft)
        if self._persisting is None and raft.has_ready():
            rd = raft.ready()
            batch = WriteBatch(rd.hard_state, rd.entries, rd.committed)
            d = self._store.write(batch)
            self._persisting = d
            d.addCallbacks(self._persisted, self._persist_failed, callbackArgs=(rd,))

    def _persisted(self, applied_ids: list[RequestId], rd: Ready) -> None:
        self._persisting = None
        if not self.running or self.raft is None:
            return
        # Persist -> send -> apply -> advance.
        self._transport.send(rd.messages)
        if rd.committed:
            self.applied = rd.committed[-1].index
            for rid in applied_ids:
                if rid.origin == self.origin:
                    req = self._writes.pop(rid, None)
                    if req is not None:
                        self._finish(req, result=None)
            self._release_apply_waiters()
        self._guard(lambda: self.raft.advance(rd))  # type: ignore[union-attr]
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
            failure = Failure()
            self._failed = failure
            log.failure("the Raft core failed an internal check; this node stops", failure)
            self._on_fatal(failure)

    def _propose_pending(self, raft: Raft) -> None:
        batch, self._new_writes = self._new_writes, []
        live = [(rid, p) for rid, p in batch if rid in self._writes]
        if not live:
            return
        ctx = next(self._ctx)
        try:
            raft.propose([p for _, p in live], ctx)
        except ProposalDropped as e:
            for rid, _ in live:
                self._fail_write(rid, NoLeader(f"no leader ({e})" if str(e) != "no leader" else None))
            return
        for rid, _ in live:
            self._writes[rid].proposed = True
        if raft.role is not Role.LEADER:
            now = self._clock.seconds()
            self._forwarded[ctx] = (now, [rid for rid, _ in live])
            while self._forwarded:
                first_ctx, (t, _) = next(iter(self._forwarded.items()))
                if now - t <= self._timeout:
                    break
                del self._forwarded[first_ctx]

    def _read_pending(self, raft: Raft) -> None:
        reqs, self._new_reads = [r for r in self._new_reads if not r.deferred.called], []
        if not reqs:
            return
        ctx = next(self._ctx)
        try:
            raft.read_index(ctx)
        except ProposalDropped:
            for req in reqs:
                self._finish(req, failure=NoLeader())
            return
        self._reads[ctx] = reqs

    def _deliver(self, out: Outbox) -> None:
        if not out:
            return
        if out.messages:
            self._transport.send(out.messages)
        for rs in out.read_states:
            reqs = self._reads.pop(rs.ctx, None)
            if reqs:
                if rs.index <= self.applied:
                    for req in reqs:
                        self._finish(req, result=None)
                else:
                    heapq.heappush(self._apply_waiters, (rs.index, rs.ctx, reqs))
        for ctx in out.failed_reads:
            for req in self._reads.pop(ctx, []):
                self._finish(req, failure=NoLeader())
        for ctx in out.failed_proposals:
            _, rids = self._forwarded.pop(ctx, (0.0, []))
            for rid in rids:
                self._fail_write(rid, NoLeader("the leader refused the forwarded write"))

    def _release_apply_waiters(self) -> None:
        while self._apply_waiters and self._apply_waiters[0][0] <= self.applied:
            _, _, reqs = heapq.heappop(self._apply_waiters)
            for req in reqs:
                self._finish(req, result=None)

    # -- requests ----------------------------------------------------------------

    def _new_request(self) -> _Request:
        return _Request(Deferred())

    def _finish(
        self, req: _Request, result: object = None, failure: Exception | None = None
    ) -> None:
        if req.timer is not None and req.timer.active():
            req.timer.cancel()
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

    def _expire_write(self, rid: RequestId) -> None:
        req = self._writes.pop(rid, None)
        if req is None:
            return
        req.timer = None
        if req.proposed:
            self._finish(req, failure=OutcomeUnknown())
        else:
            self._finish(req, failure=NoLeader())

    # -- bookkeeping -------------------------------------------------------------

    def _sync_membership(self) -> None:
        assert self.raft is not None
        membership = self.raft.membership
        if membership is not self._membership:
            self._membership = membership
            self._transport.set_peers({m.id: m.address for m in membership.members})

    def _log_role_change(self, raft: Raft) -> None:
        soft = (raft.role, raft.term, raft.leader)
        if soft == self._soft:
            return
        old, self._soft = self._soft, soft
        if old is not None and old[0] is soft[0] and old[2] == soft[2]:
            return  # only the term moved (e.g. a failed election)
        if raft.role is Role.LEADER:
            log.info("became leader in term {term}", term=raft.term)
        elif raft.leader is not None:
            log.info("following {leader} in term {term}", leader=raft.leader, term=raft.term)
        elif old is not None and old[2] is not None:
            log.info("lost contact with leader {old} (term {term})", old=old[2], term=raft.term)
