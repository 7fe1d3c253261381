# test-case-name: tests.test_lessor
"""The lessor: the leader's in-memory expiry clock for leases.

Which leases exist and their granted TTLs are replicated state
(``dkv.mvcc.leases``); when each one expires is not: only the leader keeps
deadlines, on the injected reactor clock, and an expired lease is revoked by
proposing a LeaseRevoke through the log, so every replica deletes its keys
at the same revision. Followers keep no deadlines and never expire anything.

etcd's rules: a node that becomes leader gives every lease its full TTL
again, plus ``extend`` (etcd extends by one election timeout), so no lease
expires because of an election; a keep-alive sets the deadline to now + TTL.
Keep-alive and TimeToLive touch their own lease only (a dict lookup); the
expiry check pops a heap that holds one entry per lease (an entry found
stale -- the lease was kept alive since -- goes back with its new deadline).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from dkv.logs import logger
from dkv.mvcc.errors import LeaseNotFound

log = logger("dkv.lessor")

#: How often the leader looks for expired leases (etcd: every 500 ms).
CHECK_SECONDS = 0.5
#: How long an expired lease waits before its revoke is proposed again.
RETRY_SECONDS = 3.0


class NotLeading(Exception):
    """This node's lessor keeps no deadlines: it is not the leader."""


@attrs.define
class _Lease:
    ttl: int
    deadline: float
    #: A revoke was proposed (at deadline - RETRY_SECONDS); keep-alives answer 0.
    expired: bool = False


class Lessor:
    """revoke(id) proposes the revoke of an expired lease (its Deferred's
    result is ignored; a failure is retried after ``retry_seconds``)."""

    def __init__(
        self,
        clock: IReactorTime,
        revoke: Callable[[int], Deferred[Any]],
        *,
        extend: float = 0.0,
        check_seconds: float = CHECK_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._clock = clock
        self._revoke = revoke
        self._extend = extend
        self._check_seconds = check_seconds
        self._retry_seconds = retry_seconds
        self._leases: dict[int, _Lease] = {}
        self._heap: list[tuple[float, int]] = []
        self._checker: LoopingCall | None = None

    @property
    def leading(self) -> bool:
        return self._checker is not None

    # -- leadership --------------------------------------------------------------

    def promote(self, leases: Iterable[tuple[int, int]]) -> None:
        """This node leads now: leases (id, granted TTL) are all there are;
        each gets its full TTL (+ extend) from now."""
        self.demote()
        now = self._clock.seconds()
        self._leases = {lid: _Lease(ttl, now + ttl + self._extend) for lid, ttl in leases}
        self._heap = [(lease.deadline, lid) for lid, lease in self._leases.items()]
        heapq.heapify(self._heap)
        self._checker = LoopingCall(self._check)
        self._checker.clock = self._clock
        self._checker.start(self._check_seconds, now=False)

    def demote(self) -> None:
        """This node no longer leads: forget every deadline."""
        if self._checker is not None:
            if self._checker.running:
                self._checker.stop()
            self._checker = None
        self._leases = {}
        self._heap = []

    # -- what the log applied ------------------------------------------------------

    def granted(self, lease_id: int, ttl: int) -> None:
        if self.leading and lease_id not in self._leases:
            deadline = self._clock.seconds() + ttl
            self._leases[lease_id] = _Lease(ttl, deadline)
            heapq.heappush(self._heap, (deadline, lease_id))

    def revoked(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)  # its heap entry is dropped when popped

    # -- clients -------------------------------------------------------------------

    def keep_alive(self, lease_id: int) -> int:
        """Renew lease_id: its TTL, or 0 if it does not exist (or expired and
        is being revoked), as etcd's keep-alive answers. Raises NotLeading."""
        if not self.leading:
            raise NotLeading()
        lease = self._leases.get(lease_id)
        if lease is None or lease.expired:
            return 0
        lease.deadline = self._clock.seconds() + lease.ttl
        return lease.ttl

    def remaining(self, lease_id: int) -> int | None:
        """Whole seconds left before lease_id expires (rounded down, at least
        0), or None if the lessor does not know it. Raises NotLeading."""
        if not self.leading:
            raise NotLeading()
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        if lease.expired:
            return 0
        return max(0, math.floor(lease.deadline - self._clock.seconds()))

    # -- expiry --------------------------------------------------------------------

    def _check(self) -> None:
        now = self._clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None:
                continue  # revoked meanwhile
            if lease.deadline > now:
                heapq.heappush(heap, (lease.deadline, lease_id))  # kept alive since
                continue
            lease.expired = True
            lease.deadline = now + self._retry_seconds
            heapq.heappush(heap, (lease.deadline, lease_id))
            log.debug("lease {lease} expired; proposing its revoke", lease=lease_id)
            self._revoke(lease_id).addErrback(self._revoke_failed, lease_id)

    def _revoke_failed(self, failure: Any, lease_id: int) -> None:
        if failure.check(LeaseNotFound):
            return  # a client revoked it first
        log.info(
            "revoking expired lease {lease} failed ({error}); retrying",
            lease=lease_id,
            error=failure.getErrorMessage(),
        )
