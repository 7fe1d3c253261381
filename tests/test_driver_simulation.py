"""Seeded chaos for the product's driver (``ReplicationService``): see
``tests/driver_sim.py`` for what runs and which invariants are checked after
every event.

Environment: ``DKV_DRIVER_SEEDS=N`` runs N seeds of each scenario (default 60;
the long runs are a command, see the README); ``DKV_DRIVER_SEED=S`` runs only
seed S (the failure message prints the replay command).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.driver_sim import DriverChaos, DriverCluster

SEEDS = int(os.environ.get("DKV_DRIVER_SEEDS", "60"))
ONE_SEED = os.environ.get("DKV_DRIVER_SEED")
ROOT = Path(__file__).resolve().parents[1]


def _seeds(count: int) -> list[int]:
    if ONE_SEED is not None:
        return [int(ONE_SEED)]
    return list(range(max(count, 1)))


def _run(test: str, seed: int, build: Callable[[], DriverCluster], steps: int) -> DriverCluster:
    cluster: DriverCluster | None = None
    try:
        cluster = build()
        cluster.run(steps)
        cluster.check_liveness()
    except Exception as e:
        where = f"t={cluster.clock.seconds():.3f}s" if cluster is not None else "setup"
        trace = "\n".join(cluster.trace) if cluster is not None else ""
        node_id = shlex.quote(f"tests/test_driver_simulation.py::{test}[{seed}]")
        replay = (
            f"replay: cd {shlex.quote(str(ROOT))} && DKV_DRIVER_SEED={seed} "
            f"{shlex.quote(sys.executable)} -m pytest {node_id} -q"
        )
        raise AssertionError(
            f"{test} seed {seed} failed at {where}: {type(e).__name__}: {e}\nlast events:\n{trace}\n{replay}"
        ) from e
    return cluster


@pytest.mark.parametrize("seed", _seeds(SEEDS))
def test_three_drivers(seed: int) -> None:
    """Three voters, compaction every 20 entries (snapshots to whoever falls
    behind), slow disks, a lossy network, partitions, crashes."""
    cluster = _run("test_three_drivers", seed, lambda: DriverCluster(seed), steps=3000)
    assert cluster.inv.reads_checked > 0 and cluster.inv.acked, cluster.stats


@pytest.mark.parametrize("seed", _seeds(SEEDS // 2))
def test_one_voter_driver_with_learners(seed: int) -> None:
    """A lone voter (it wins its elections alone) and two learners."""
    _run(
        "test_one_voter_driver_with_learners",
        seed,
        lambda: DriverCluster(
            seed, learners=("n2", "n3"), chaos=DriverChaos(crash_weight=0.02, crash_leader=0.8, slow_write=0.6)
        ),
        steps=3000,
    )


@pytest.mark.parametrize("seed", _seeds(SEEDS // 2))
def test_drivers_snapshot_heavy(seed: int) -> None:
    """Compaction every few entries, keeping none: almost every lagging
    follower catches up by snapshot, often while the next appends arrive."""
    cluster = _run(
        "test_drivers_snapshot_heavy",
        seed,
        lambda: DriverCluster(
            seed, snapshot_entries=3, snapshot_keep=0, chaos=DriverChaos(partition_weight=0.02, slow_write=0.5)
        ),
        steps=3000,
    )
    assert cluster.stats.get("snapshot-staged", 0) > 0, cluster.stats
