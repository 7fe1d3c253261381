"""Leases on three product drivers (``tests.driver_sim``) on one fake clock:
only the leader's lessor keeps deadlines; keep-alives keep a lease across a
leader crash (the new leader gives it its full TTL again); once they stop,
the leader's revoke deletes the keys at one revision on every node."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dkv.commands import encode
from dkv.errors import NoLeader
from dkv.mvcc.leases import LeaseReader
from dkv.node_leases import NodeLeases
from dkv.pb.etcd_rpc_pb2 import LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest
from tests.driver_sim import TICK, DriverCluster


def _settle(cluster: DriverCluster, seconds: float) -> None:
    for _ in range(round(seconds / TICK)):
        cluster.clock.advance(TICK)


def _result(d: Deferred[Any], cluster: DriverCluster) -> Any:
    got: list[Any] = []
    d.addBoth(got.append)
    for _ in range(500):
        if got:
            break
        cluster.clock.advance(TICK)
    assert got, "no answer"
    return got[0]


class Leased:
    """A NodeLeases on every running driver, rebuilt when one restarts."""

    def __init__(self, cluster: DriverCluster) -> None:
        self.cluster = cluster
        self.built: dict[str, tuple[object, NodeLeases]] = {}

    def of(self, nid: str) -> NodeLeases:
        svc = self.cluster.services[nid]
        assert svc is not None
        known = self.built.get(nid)
        if known is None or known[0] is not svc:
            known = self.built[nid] = (svc, NodeLeases(svc))
        return known[1]

    def sync(self) -> None:
        for nid in self.cluster._live():
            self.of(nid)


def _has_key(cluster: DriverCluster, nid: str, key: bytes) -> bool:
    svc = cluster.services[nid]
    assert svc is not None
    with svc.view() as state:
        return bool(state.range(RangeRequest(key=key)).kvs)


def _leases(cluster: DriverCluster, nid: str) -> list[int]:
    svc = cluster.services[nid]
    assert svc is not None
    with svc.view() as state:
        return [lid for lid, _ in LeaseReader(state.tables).all()]


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_keep_alives_hold_a_lease_across_a_leader_crash_then_the_leader_expires_it(seed: int) -> None:
    cluster = DriverCluster(seed)
    cluster.faults_on = False
    leased = Leased(cluster)
    leased.sync()
    _settle(cluster, 1.0)
    leader = cluster.leader()
    assert leader is not None
    granted = _result(leased.of(leader).grant(LeaseGrantRequest(ID=5, TTL=2)), cluster)
    assert granted.TTL == 2
    svc = cluster.services[leader]
    assert svc is not None
    rid = svc.next_request_id()
    _result(svc.propose(rid, encode(rid, PutRequest(key=b"k0", value=b"v", lease=5))), cluster)
    _settle(cluster, 0.2)
    assert all(_has_key(cluster, nid, b"k0") for nid in cluster._live())

    def keep_alive_for(seconds: float) -> None:
        for _ in range(round(seconds / 0.5)):
            current = cluster.leader()
            if current is not None:
                leased.of(current).keep_alive(LeaseKeepAliveRequest(ID=5))
            for nid in cluster._live():
                if nid != current:
                    assert not leased.of(nid).lessor.leading  # followers keep no deadlines
                    refused = _result(leased.of(nid).keep_alive(LeaseKeepAliveRequest(ID=5)), cluster)
                    assert isinstance(refused, Failure) and refused.check(NoLeader)  # no leader to forward to
            _settle(cluster, 0.5)
            leased.sync()

    keep_alive_for(6)
    cluster.crash(leader)  # restarts within a second
    keep_alive_for(6)
    new = cluster.leader()
    assert new is not None and new != leader
    leased.sync()
    assert all(_has_key(cluster, nid, b"k0") for nid in cluster._live())
    assert leased.of(new).lessor.remaining(5) is not None
    assert all(_leases(cluster, nid) == [5] for nid in cluster._live())  # the restarted node too

    with cluster.services[new].view() as state:  # type: ignore[union-attr]
        before = state.revision
    _settle(cluster, 2 + 0.1 + 0.5 + 0.2)  # TTL + extend + the check interval + the commit
    for nid in cluster._live():
        assert not _has_key(cluster, nid, b"k0") and _leases(cluster, nid) == []
        with cluster.services[nid].view() as state:  # type: ignore[union-attr]
            assert state.revision == before + 1
