"""Clock faults on real nodes (``dkv.testing.faketime``: libfaketime steps a
node's wall clock, its monotonic clock untouched): a lease of 30 s held while
the leader's wall clock jumps an hour ahead, an hour back and runs twice as
fast, and a follower's jumps too, is not expired early; writes and
linearizable reads go on, and the fault suite's checks pass on the history."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dkv.testing.checks import final_checks
from dkv.testing.cluster import Cluster
from dkv.testing.faketime import REAL, FakeClocks, library
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64
from dkv.testing.workload import Workload, WorkloadConfig, history_ops

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(library() is None, reason="libfaketime is not installed (apt-get install faketime)"),
]

TTL = 30


def _ttl_left(cluster: Cluster, lease: str) -> int:
    """The lease's remaining TTL as a node that answers says (polls through
    an election)."""

    def ask() -> int | None:
        for node in cluster.running():
            status, body = cluster.request(node, "POST", "/v3/lease/timetolive", {"ID": lease})
            if status == 200:
                return int(body["TTL"])
        return None

    return wait_until(ask, 20.0, "an answer to TimeToLive")


def test_wall_clock_jumps_neither_expire_a_lease_early_nor_break_safety(tmp_path: Path) -> None:
    lib = library()
    assert lib is not None
    with Cluster(tmp_path / "cluster", ["a", "b", "c"]) as cluster:
        clocks = FakeClocks(tmp_path / "clocks", lib)
        clocks.install(cluster)
        cluster.start()
        leader = cluster.leader(timeout=30)
        follower = next(i for i in cluster.ids if i != leader)
        status, grant = cluster.request(leader, "POST", "/v3/lease/grant", {"TTL": str(TTL)})
        assert status == 200, grant
        lease = grant["ID"]
        granted = time.monotonic()
        status, answer = cluster.request(
            leader, "POST", "/v3/kv/put", {"key": b64("held"), "value": b64("v"), "lease": lease}
        )
        assert status == 200, answer
        workload = Workload(
            cluster.rest_ports, WorkloadConfig(clients=4, keys=3, timeout=cluster.client_timeout), seed=5
        )
        workload.start()
        seen: list[tuple[str, str, int]] = []
        try:
            for node, spec in ((leader, "+3600"), (leader, "-3600"), (leader, "+0 x2"), (follower, "+3600")):
                clocks.set(node, spec)
                wait_until(lambda: len(workload.requests) > len(seen) * 50 + 50, 30.0, "operations to go on")  # noqa: B023
                left = _ttl_left(cluster, lease)
                elapsed = time.monotonic() - granted
                seen.append((node, spec, left))
                # Never expired early, never extended: what real time left, give or take a second.
                assert TTL - elapsed - 2 <= left <= TTL, (seen, elapsed)
                clocks.set(node, REAL)
        finally:
            for i in cluster.ids:
                clocks.set(i, REAL)
            workload.stop()
        status, body = cluster.request(cluster.leader(timeout=30), "POST", "/v3/kv/range", {"key": b64("held")})
        assert status == 200 and int(body.get("count") or 0) == 1, body
        requests = workload.requests
        ok = [r for r in requests if r.op.outcome == "ok"]
        assert sum(r.op.kind == "write" for r in ok) >= 20 and sum(r.op.kind == "read" for r in ok) >= 20, len(ok)
        checks, verdict, _ = final_checks(cluster, history_ops(requests), workload.keys, stale=workload.side_reads)
        failed = [c for c in checks if not c.passed]
        assert not failed, "\n".join(f"{c.name}: {c.detail}" for c in failed)
        assert verdict is not None and verdict.ok, verdict
