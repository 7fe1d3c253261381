"""The lock workload (``dkv.testing.lock_workload``) on a real 3-node dkv
while the leader is killed or the nodes are partitioned: no two holders'
safe intervals overlap (``dkv.testing.lock_check``), and the lock keeps
changing hands."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.lock_check import check_holds, write_attempts
from dkv.testing.lock_workload import LockConfig, LockWorkload
from dkv.testing.nemesis import Nemesis, NemesisConfig

pytestmark = pytest.mark.process


@pytest.mark.parametrize("schedule", ["kill-leader", "partition"])
def test_no_two_lock_holders_overlap_under_faults(tmp_path: Path, schedule: str) -> None:
    with Cluster(tmp_path / "cluster", ["a", "b", "c"], tick_ms=50, election_ticks=10, request_timeout=2.0) as cluster:
        cluster.start()
        cluster.leader(timeout=30)
        workload = LockWorkload(cluster.rest_ports, LockConfig(clients=4, ttl=2), seed=13)
        nemesis = Nemesis(
            cluster, schedule, random.Random(13), NemesisConfig(fault_seconds=(2, 3), quiet_seconds=(1, 2))
        )
        workload.start()
        try:
            time.sleep(1)  # schedule
            nemesis.start()
            time.sleep(14)  # schedule
            nemesis.stop()
            nemesis.heal_all()
            time.sleep(3)  # schedule: a healed tail
        finally:
            workload.stop()
        attempts = workload.attempts
        write_attempts(tmp_path / "locks.jsonl", attempts)
        verdict = check_holds(attempts)
        assert verdict.ok, verdict.explain()
        assert nemesis.injected >= 2, verdict.figures
        assert verdict.figures["acquisitions"] >= 10, verdict.figures
        assert verdict.figures["contended_attempts"] >= 1, verdict.figures
