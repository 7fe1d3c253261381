# test-case-name: tests.test_replication,tests.test_driver_simulation
"""The request table: client requests waiting for the cluster, and their deadlines.

Every write, linearizable read, membership change and leadership transfer a
client asks of this node waits here until it is answered or its deadline
passes. The table knows what to tell the client in each case:

* a write that was never handed to the core (no leader took it) fails with
  ``NoLeader`` (certainly not applied, safe to retry); one that was handed to
  the core (appended here or forwarded) and not seen applied in time fails
  with ``OutcomeUnknown``; a forward the leader refused, or the transport
  dropped unsent, is certainly not appended and waits again;
* a read fails with ``NoLeader`` (nothing is ever wrong about a refused read).

Names. A write is named by its ``RequestId`` (``origin``, random per process,
and a counter), which travels in the log entry, so whichever node applies it
recognises it. Forwarded proposals and reads are named by a ``ctx`` whose
high half is a random *incarnation* of this process: an answer meant for an
earlier run of the node (same id, restarted) matches nothing here.

Deadlines are checked on every tick (``expire``), not with a timer per
request: a request ends between ``timeout - tick`` and ``timeout``. Only
unfinished requests stay referenced; the deadline queue holds plain
``(deadline, key)`` tuples (it held the requests themselves once: at 6k
writes/s, 30k finished requests and their Deferreds made young-generation
collections take up to 100 ms).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

import attrs
from twisted.internet.defer import Deferred

from dkv.commands import RequestId
from dkv.errors import NoLeader, OutcomeUnknown

#: A write waiting to be proposed: its id and its encoded command.
Write = tuple[RequestId, bytes]


def _shutting_down(_: Request) -> Exception:
    return NoLeader("node is shutting down")


@attrs.define(eq=False)
class Request:
    """A client request waiting for the cluster, until ``deadline``."""

    deferred: Deferred
    deadline: float
    #: What the client is told at the deadline.
    expired: Callable[[Request], Exception]
    #: What the client is told if the node stops first.
    stopped: Callable[[Request], Exception] = _shutting_down
    #: Handed to the core (appended or forwarded): its fate may be unknown.
    proposed: bool = False
    #: A write's request id (to forget it when it expires).
    rid: RequestId | None = None
    key: int = 0
    #: A linearizable read (counted in ``pending_reads``).
    read: bool = False
    #: When this node took it (the driver's clock).
    since: float = 0.0


def _write_expired(req: Request) -> Exception:
    return OutcomeUnknown() if req.proposed else NoLeader()


def _write_stopped(req: Request) -> Exception:
    if req.proposed:
        return OutcomeUnknown("node shut down before the write was applied")
    return NoLeader("node is shutting down")


def _read_expired(req: Request) -> Exception:
    return NoLeader("no leader confirmed the read in time") if req.proposed else NoLeader()


class RequestTable:
    """Not thread-safe; the driver's reactor thread owns it."""

    def __init__(self, rng: random.Random, timeout: float, tick: float) -> None:
        self._timeout = timeout
        self._tick = tick
        #: Random per process start; with a counter it names our writes.
        self.origin = rng.getrandbits(63) | 1
        self._seq = itertools.count(1)
        self._incarnation = rng.getrandbits(31) | 1
        self._ctx_seq = itertools.count(1)
        self._keys = itertools.count()
        #: Every unfinished request by key, and (deadline, key), oldest first.
        self._pending: dict[int, Request] = {}
        self._expiring: deque[tuple[float, int]] = deque()
        # Writes: by id; waiting for this turn's single propose; refused on
        # the way and retried at the next tick (not at once, so a node and a
        # peer it wrongly takes for the leader do not bounce them back and
        # forth until it learns better); forwarded, by ctx.
        self._writes: dict[RequestId, Request] = {}
        self._new_writes: list[Write] = []
        self._retry_writes: list[Write] = []
        self._forwarded: OrderedDict[int, tuple[float, list[Write]]] = OrderedDict()
        # Reads: waiting for this turn's read_index; retried; asked, by ctx.
        self._new_reads: list[Request] = []
        self._retry_reads: list[Request] = []
        self._reads: dict[int, list[Request]] = {}
        #: (index, tie-breaker, requests) waiting until the applied index
        #: reaches index: read barriers and membership changes.
        self._apply_waiters: list[tuple[int, int, list[Request]]] = []
        self._transfers: list[Request] = []
        #: Requests waiting until this node knows a leader (``add_leader_wait``).
        self._leader_waits: list[Request] = []
        #: Writes that failed for want of the cluster (no leader took them,
        #: or their outcome stayed unknown) by their deadline (etcd's
        #: proposals_failed_total).
        self.failed_writes = 0
        #: When each linearizable read still pending was taken, by key,
        #: oldest first.
        self._reads_since: dict[int, float] = {}

    @property
    def pending_writes(self) -> int:
        """Writes taken by this node and not yet answered (etcd's
        proposals_pending)."""
        return len(self._writes)

    def oldest_write_since(self) -> float | None:
        """When the write that has waited longest on this node (of those
        not yet answered, whose client still waits) was taken; None when
        none waits. A write whose client went away (its Deferred cancelled)
        stays in ``pending_writes`` until applied, but nobody waits for it:
        a client that gives up and asks again must not have its new request
        judged by the age of the one it abandoned."""
        for req in self._writes.values():  # in the order they were taken
            if not req.deferred.called:
                return req.since
        return None

    @property
    def pending_reads(self) -> int:
        """Linearizable reads taken by this node and not yet finished
        (answered, expired, or failed); one whose client went away counts
        until its deadline."""
        return len(self._reads_since)

    @property
    def waits_for_apply(self) -> bool:
        """Whether a client of this node may be waiting for an apply here: a
        write it took is not yet answered, or something (a read at its read
        index, a membership change, ``wait_applied``) waits for the applied
        index to reach an index."""
        return bool(self._writes or self._apply_waiters)

    def oldest_read_since(self) -> float | None:
        """When the read that has waited longest on this node (of those
        counted in ``pending_reads``) was taken; None when none waits."""
        for since in self._reads_since.values():  # in the order they were taken
            return since
        return None

    # -- names -----------------------------------------------------------------------

    def next_request_id(self) -> RequestId:
        return RequestId(self.origin, next(self._seq))

    def next_ctx(self) -> int:
        return (self._incarnation << 32) | (next(self._ctx_seq) & 0xFFFFFFFF)

    def ours(self, ctx: int) -> bool:
        """Does ctx come from this run of the node?"""
        return ctx >> 32 == self._incarnation

    # -- creating requests -----------------------------------------------------------

    def _new(self, now: float, expired: Callable[[Request], Exception]) -> Request:
        key = next(self._keys)
        deadline = now + self._timeout - self._tick
        req = Request(Deferred(), deadline, expired, key=key, since=now)
        self._pending[key] = req
        self._expiring.append((deadline, key))
        return req

    def add_write(self, now: float, rid: RequestId, payload: bytes) -> Deferred[None]:
        req = self._new(now, _write_expired)
        req.stopped = _write_stopped
        req.rid = rid
        self._writes[rid] = req
        self._new_writes.append((rid, payload))
        return req.deferred

    def add_read(self, now: float) -> Deferred[None]:
        req = self._new(now, _read_expired)
        req.read = True
        self._reads_since[req.key] = now
        self._new_reads.append(req)
        return req.deferred

    def add_change(self, now: float, index: int) -> Deferred[None]:
        """A membership change appended at index: fires once it is applied."""
        req = self._new(now, lambda _: OutcomeUnknown())
        req.proposed = True
        req.stopped = lambda _: OutcomeUnknown("node shut down before the change was applied")
        heapq.heappush(self._apply_waiters, (index, self.next_ctx(), [req]))
        return req.deferred

    def add_apply_wait(self, now: float, index: int) -> Deferred[None]:
        """Fires once the applied index reaches index; fails with NoLeader
        if it does not by the request's deadline or the node stops."""
        req = self._new(now, lambda _: NoLeader(f"index {index} was not applied in time"))
        req.stopped = lambda _: NoLeader("node shut down")
        heapq.heappush(self._apply_waiters, (index, self.next_ctx(), [req]))
        return req.deferred

    def add_transfer(self, now: float, target: str) -> Deferred[str]:
        req = self._new(now, lambda _: NoLeader(f"leadership transfer to {target} did not complete in time"))
        self._transfers.append(req)
        return req.deferred

    def add_leader_wait(self, now: float) -> Deferred[str]:
        """Fires with the leader's id once this node knows one
        (``leader_known``); fails with NoLeader if none is known by the
        request's deadline or the node stops."""
        req = self._new(now, lambda _: NoLeader("no leader was elected in time"))
        self._leader_waits.append(req)
        return req.deferred

    def failed(self, error: Exception) -> Deferred:
        """A request refused before it waited at all."""
        d: Deferred = Deferred()
        d.errback(error)
        return d

    # -- writes ------------------------------------------------------------------------

    @property
    def has_new_writes(self) -> bool:
        return bool(self._new_writes)

    def take_new_writes(self) -> list[Write]:
        """This turn's writes still waiting for an answer, oldest first."""
        batch, self._new_writes = self._new_writes, []
        return [(rid, p) for rid, p in batch if rid in self._writes]

    def hold_writes(self, writes: list[Write]) -> None:
        """No leader took them (no leader known, or a transfer under way):
        they wait for the next turn, ahead of newer ones."""
        self._new_writes[:0] = writes

    def proposed(self, writes: Iterable[Write]) -> None:
        for rid, _ in writes:
            self._writes[rid].proposed = True

    def forwarded(self, now: float, ctx: int, writes: list[Write]) -> None:
        """writes went to the leader under ctx; forwards older than the
        timeout are forgotten (their requests expired)."""
        self._forwarded[ctx] = (now, writes)
        while self._forwarded:
            first_ctx, (t, _) = next(iter(self._forwarded.items()))
            if now - t <= self._timeout:
                break
            del self._forwarded[first_ctx]

    def refused(self, ctx: int) -> None:
        """The leader refused the forward ctx, or the transport dropped it
        unsent: certainly not appended, so no longer "proposed"; retried at
        the next tick."""
        _, refused = self._forwarded.pop(ctx, (0.0, []))
        for rid, payload in refused:
            req = self._writes.get(rid)
            if req is not None:
                req.proposed = False
                self._retry_writes.append((rid, payload))

    def applied_writes(self, results: Iterable[tuple[RequestId, object]]) -> float | None:
        """The entries carrying these request ids were applied, with these
        results: a response, or the exception the request failed with.
        Returns when the newest of the writes this answers was taken (the
        fastest of them; None if it answers none)."""
        origin = self.origin
        newest = None
        for rid, result in results:
            if rid.origin == origin:
                req = self._writes.pop(rid, None)
                if req is not None:
                    if newest is None or req.since > newest:
                        newest = req.since
                    if isinstance(result, Exception):
                        self.finish(req, failure=result)
                    else:
                        self.finish(req, result)
        return newest

    # -- reads -------------------------------------------------------------------------

    @property
    def has_new_reads(self) -> bool:
        return bool(self._new_reads)

    def take_new_reads(self) -> list[Request]:
        reqs, self._new_reads = [r for r in self._new_reads if not r.deferred.called], []
        return reqs

    def hold_reads(self, reqs: list[Request]) -> None:
        self._new_reads[:0] = reqs

    def reads_asked(self, ctx: int, reqs: list[Request]) -> None:
        for req in reqs:
            req.proposed = True
        self._reads[ctx] = reqs

    def read_index(self, ctx: int, index: int, applied: int) -> None:
        """The reads asked under ctx may be served once index is applied."""
        reqs = self._reads.pop(ctx, None)
        if not reqs:
            return
        if index <= applied:
            for req in reqs:
                self.finish(req)
        else:
            heapq.heappush(self._apply_waiters, (index, ctx, reqs))

    def read_refused(self, ctx: int) -> None:
        """No leader confirmed the reads of ctx (it lost leadership, or the
        transport dropped the request unsent): retried at the next tick."""
        self._retry_reads.extend(self._reads.pop(ctx, []))

    def releases(self, applied: int) -> bool:
        """Whether ``release_applied(applied)`` would finish something."""
        return bool(self._apply_waiters) and self._apply_waiters[0][0] <= applied

    def release_applied(self, applied: int) -> None:
        """Finish what waited for the applied index to reach applied."""
        waiters = self._apply_waiters
        while waiters and waiters[0][0] <= applied:
            _, _, reqs = heapq.heappop(waiters)
            for req in reqs:
                self.finish(req)

    # -- transfers ---------------------------------------------------------------------

    def transfers_done(self, leader: str) -> None:
        transfers, self._transfers = self._transfers, []
        for req in transfers:
            self.finish(req, leader)

    @property
    def has_transfers(self) -> bool:
        return bool(self._transfers)

    # -- waiting for a leader ------------------------------------------------------------

    def leader_known(self, leader: str) -> None:
        waits, self._leader_waits = self._leader_waits, []
        for req in waits:
            self.finish(req, leader)

    @property
    def has_leader_waits(self) -> bool:
        return bool(self._leader_waits)

    # -- time and the end -----------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """Expire what passed its deadline; refused requests try again."""
        expiring = self._expiring
        while expiring and expiring[0][0] <= now:
            req = self._pending.get(expiring.popleft()[1])
            if req is None:
                continue
            if req.deferred.called:  # e.g. cancelled: forget it
                self.finish(req)
                continue
            if req.rid is not None:
                self._writes.pop(req.rid, None)
                self.failed_writes += 1
            self.finish(req, failure=req.expired(req))
        if self._retry_writes:
            self._new_writes[:0], self._retry_writes = self._retry_writes, []
        if self._retry_reads:
            self._new_reads[:0], self._retry_reads = self._retry_reads, []

    def finish(self, req: Request, result: object = None, failure: Exception | None = None) -> None:
        if self._pending.pop(req.key, None) is not None and req.read:
            del self._reads_since[req.key]
        if req.deferred.called:  # e.g. cancelled because the client went away
            return
        if failure is not None:
            req.deferred.errback(failure)
        else:
            req.deferred.callback(result)

    def fail_all(self) -> None:
        """The node stops: every waiting request is told so (see ``Request.stopped``)."""
        for req in list(self._pending.values()):
            self.finish(req, failure=req.stopped(req))
        self._pending.clear()
        self._reads_since.clear()
        self._expiring.clear()
        self._writes.clear()
        self._new_writes, self._retry_writes = [], []
        self._forwarded.clear()
        self._new_reads, self._retry_reads, self._reads = [], [], {}
        self._apply_waiters, self._transfers, self._leader_waits = [], [], []
