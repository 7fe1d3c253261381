"""Leases on a real 3-node dkv with faults: a lease kept alive by etcdctl's
``lease keep-alive`` survives three leader kills (a new leader gives every
lease its full TTL again), and once the keep-alives stop it expires within
TTL + one election timeout; keep-alives and TimeToLive sent to a follower
are forwarded to the leader."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dkv.lessor import CHECK_SECONDS
from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, etcd_env, etcdctl_binary
from dkv.testing.poll import wait_until
from dkv.testing.process import Process
from dkv.testing.rest_client import b64

pytestmark = [pytest.mark.process, pytest.mark.etcd]

TTL = 3


def _api(cluster: Cluster) -> ApiEndpoints:
    return ApiEndpoints(
        system="dkv",
        names=tuple(cluster.ids),
        gateway_urls=tuple(f"http://127.0.0.1:{cluster.rest_ports[i]}" for i in cluster.ids),
        grpc_addresses=tuple(f"127.0.0.1:{cluster.rpc_ports[i]}" for i in cluster.ids),
        directory=cluster.dir,
    )


def _held(api: ApiEndpoints, member: int) -> bool:
    status, body = api.gateway("/v3/kv/range", {"key": b64(b"held")}, member=member)
    assert status == 200, body
    return body.get("count") == "1"


def test_a_kept_alive_lease_survives_leader_kills_then_expires_in_time(tmp_path: Path, procs: list) -> None:
    binary = etcdctl_binary()
    if binary is None:
        pytest.skip(f"etcdctl is not installed ({INSTALL_HINT})")
    with Cluster(tmp_path / "dkv") as cluster:
        cluster.start()
        cluster.wait_settled()
        api = _api(cluster)
        lease = api.ok("/v3/lease/grant", {"TTL": str(TTL)})["ID"]
        api.ok("/v3/kv/put", {"key": b64(b"held"), "value": b64(b"v"), "lease": lease})
        keeper = Process(
            [binary, "--endpoints", api.etcdctl_endpoints, "lease", "keep-alive", format(int(lease), "x")],
            log_path=tmp_path / "keep-alive.log",
            env=etcd_env() | {"ETCDCTL_API": "3"},
            name="etcdctl keep-alive",
        )
        procs.append(keeper)
        keeper.start()
        for _ in range(3):
            old = cluster.leader()
            cluster.kill(old)
            cluster.leader(among=[i for i in cluster.ids if i != old])
            cluster.restart(old)
            cluster.wait_settled()
            assert all(_held(api, m) for m in range(3)), "the lease expired across a leader change"
        assert keeper.alive
        # Keep-alive and TimeToLive on a follower are forwarded to the leader.
        leader = cluster.leader()
        follower = next(i for i, name in enumerate(cluster.ids) if name != leader)
        kept = api.ok("/v3/lease/keepalive", {"ID": lease}, member=follower)["result"]
        assert kept["TTL"] == str(TTL)
        ttl = api.ok("/v3/lease/timetolive", {"ID": lease, "keys": True}, member=follower)
        assert ttl["grantedTTL"] == str(TTL) and ttl["keys"] == [b64(b"held")]
        assert int(ttl["TTL"]) >= TTL - 1

        keeper.kill()
        stopped = time.monotonic()
        election_timeout = 2 * cluster.election_ticks * cluster.tick_ms / 1000  # at most
        wait_until(lambda: not _held(api, 0), TTL + election_timeout + 5, "the lease to expire")
        elapsed = time.monotonic() - stopped
        # etcdctl renews every TTL/3 s; the leader checks every CHECK_SECONDS.
        assert TTL - TTL / 3 - 0.3 <= elapsed <= TTL + election_timeout + CHECK_SECONDS + 0.5, elapsed
        assert all(not _held(api, m) for m in range(3))
        ttl = api.ok("/v3/lease/timetolive", {"ID": lease}, member=follower)
        assert ttl["TTL"] == "-1"
