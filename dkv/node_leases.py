# test-case-name: tests.test_lease_api,tests.test_lessor
"""etcd's Lease service on a node: grant, revoke, keep-alive, TimeToLive,
list.

Grant and revoke go through the log (``dkv.mvcc.lease_ops``): the node that
takes a grant picks the id for ID 0 (random, 63 bits, as etcd's server does
before proposing) and raises the TTL to the minimum, ceil(1.5 x election
timeout) seconds, so every replica applies the same values. Keep-alive and
TimeToLive need the expiry clock, which only the leader's lessor
(``dkv.lessor``) keeps: a follower forwards them to the leader's
``dkv.v0.Cluster`` service (once; a forwarded call is never forwarded
again), as etcd's followers forward them to their leader. LeaseLeases reads
the local applied state, as etcd's does.

Responses carry no header here: the API layer fills it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from dkv.commands import Idempotency, LeaseRequest, encode
from dkv.errors import NoLeader
from dkv.lessor import Lessor, NotLeading
from dkv.mvcc.errors import LeaseTTLTooLarge
from dkv.mvcc.leases import LeaseReader
from dkv.pb.etcd_rpc_pb2 import (
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseStatus,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
)
from dkv.raft import Role
from dkv.statemachine import Outcome

if TYPE_CHECKING:
    from dkv.replication import ReplicationService
    from dkv.transport.cluster_client import ClusterClient

#: etcd's MaxLeaseTTL: a grant above it fails with LeaseTTLTooLarge.
MAX_LEASE_TTL = 9_000_000_000
_ID_BITS = (1 << 63) - 1


def min_lease_ttl(election_seconds: float) -> int:
    """etcd's minimum lease TTL: ceil(1.5 x the election timeout), seconds."""
    return math.ceil(1.5 * election_seconds)


@attrs.define
class NodeLeases:
    replication: ReplicationService
    cluster: ClusterClient | None = None
    address_of: Callable[[str], str | None] = lambda node_id: None
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    lessor: Lessor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.replication
        self.lessor = Lessor(r.clock, self._revoke_expired, extend=self.election_seconds)
        r.apply_listeners.append(self._applied)
        r.leadership_listeners.append(self._leadership)
        if r.running and r.raft is not None and r.raft.role is Role.LEADER:
            self._leadership(True)  # built after the node took the lead

    @property
    def election_seconds(self) -> float:
        config = self.replication.config
        return config.raft.election_ticks * config.tick_seconds

    @property
    def min_ttl(self) -> int:
        return min_lease_ttl(self.election_seconds)

    # -- through the log -------------------------------------------------------------

    def grant(
        self, request: LeaseGrantRequest, idempotency: Idempotency | None = None
    ) -> Deferred[LeaseGrantResponse]:
        """Fires with the LeaseGrantResponse once applied here; fails with
        LeaseTTLTooLarge, LeaseExists, NoLeader, OutcomeUnknown. With an
        idempotency key, the digest is of the request as asked (ID 0 stays 0),
        so a retry that this node would give another random id matches."""
        if request.TTL > MAX_LEASE_TTL:
            return fail(LeaseTTLTooLarge())
        lease_id = request.ID
        while lease_id == 0:
            lease_id = self.rng.getrandbits(63) & _ID_BITS
        granted = LeaseGrantRequest(ID=lease_id, TTL=max(request.TTL, self.min_ttl))
        return self._propose(granted, idempotency, as_asked=request)

    def revoke(
        self, request: LeaseRevokeRequest, idempotency: Idempotency | None = None
    ) -> Deferred[LeaseRevokeResponse]:
        """Deletes the lease's keys (one revision) and the lease; fails with
        LeaseNotFound, NoLeader, OutcomeUnknown."""
        return self._propose(LeaseRevokeRequest(ID=request.ID), idempotency)

    def _propose(
        self, request: LeaseRequest, idempotency: Idempotency | None = None, as_asked: LeaseRequest | None = None
    ) -> Deferred[Any]:
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode(rid, request, idempotency, as_asked=as_asked))

    def _revoke_expired(self, lease_id: int) -> Deferred[Any]:
        return self.revoke(LeaseRevokeRequest(ID=lease_id))

    # -- on the leader ------------------------------------------------------------------

    def keep_alive(self, request: LeaseKeepAliveRequest, forward: bool = True) -> Deferred[LeaseKeepAliveResponse]:
        """The lease's TTL after renewing it, 0 if it does not exist (etcd's
        answers); fails with NoLeader."""
        try:
            ttl = self.lessor.keep_alive(request.ID)
        except NotLeading:
            return self._forward("LeaseKeepAlive", request, forward)
        return succeed(LeaseKeepAliveResponse(ID=request.ID, TTL=ttl))

    def time_to_live(
        self, request: LeaseTimeToLiveRequest, forward: bool = True
    ) -> Deferred[LeaseTimeToLiveResponse]:
        """Remaining seconds (rounded down), the granted TTL and, if asked,
        the keys; TTL -1 if the lease does not exist (etcd's answer)."""
        try:
            remaining = self.lessor.remaining(request.ID)
        except NotLeading:
            return self._forward("LeaseTimeToLive", request, forward)
        response = LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        try:
            with self.replication.view() as state:
                reader = LeaseReader(state.tables)
                granted = reader.granted_ttl(request.ID)
                if granted is not None and remaining is not None:
                    response.TTL, response.grantedTTL = remaining, granted
                    if request.keys:
                        response.keys.extend(reader.keys(request.ID))
        except NoLeader as e:
            return fail(e)
        return succeed(response)

    def _forward(self, method: str, request: Any, forward: bool) -> Deferred[Any]:
        raft = self.replication.raft
        leader = raft.leader if raft is not None and raft.role is not Role.LEADER else None
        address = self.address_of(leader) if leader else None
        if not forward or address is None or self.cluster is None:
            return fail(NoLeader())
        return self.cluster.call(address, method, request)

    # -- local -------------------------------------------------------------------------

    def leases(self) -> LeaseLeasesResponse:
        """Every lease in this node's applied state. Raises NoLeader once the
        node is stopping."""
        with self.replication.view() as state:
            ids = [lid for lid, _ in LeaseReader(state.tables).all()]
        return LeaseLeasesResponse(leases=[LeaseStatus(ID=lid) for lid in ids])

    # -- the replication hooks ----------------------------------------------------------

    def _applied(self, outcome: Outcome) -> None:
        for lease_id, ttl in outcome.leases_granted:
            self.lessor.granted(lease_id, ttl)
        for lease_id in outcome.leases_revoked:
            self.lessor.revoked(lease_id)

    def _leadership(self, leading: bool) -> None:
        if not leading:
            self.lessor.demote()
            return
        with self.replication.view() as state:
            leases = list(LeaseReader(state.tables).all())
        self.lessor.promote(leases)
