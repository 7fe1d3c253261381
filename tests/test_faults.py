"""The fault suite in CI: a short run of every nemesis schedule, and crash recovery.

Each schedule runs ``dkv.torture.run_torture`` (three real nodes, ten
clients on five keys, faults every few seconds, then a healed tail) and
asserts that every check passed -- convergence, acknowledged writes,
nothing phantom, failed writes invisible, linearizability, clean node logs,
recovery after healing -- that faults were really injected, and that the
history holds what such a run must (many ``ok`` reads and writes, and some
operations the faults made ``fail`` or ``unknown``). On a failure the
assertion shows the summary with the checker's explanation, and the run's
files (history, fault log, node logs) stay in the test's ``tmp_path``.

Seeds are fixed per schedule (``DKV_TORTURE_SEED`` adds an offset, to try
others); timing is real, so a seed does not replay a run exactly.
"""

from __future__ import annotations

import json
import os

import pytest

from dkv.testing.checks import final_checks
from dkv.testing.cluster import Cluster
from dkv.testing.history import read_history
from dkv.testing.nemesis import SCHEDULES
from dkv.testing.workload import Workload, WorkloadConfig
from dkv.torture import TortureConfig, TortureResult, run_torture

pytestmark = pytest.mark.process

#: Seconds of workload per schedule, of which TAIL are healed.
RUN_SECONDS = 32.0
TAIL_SECONDS = 6.0
SEED_OFFSET = int(os.environ.get("DKV_TORTURE_SEED", "0"))

#: What each schedule must have made clients see besides ``ok``.
_NOT_OK_EXPECTED = {
    # A killed node refuses connections: certainly-not-applied failures.
    "kill-leader": ("fail",),
    "kill-random": ("fail",),
    # A paused node answers nothing until it runs again: client timeouts,
    # or a late 503/504; either way some operation did not succeed.
    "pause": ("fail", "unknown"),
    "partition": ("fail", "unknown"),
    "isolate-leader": ("fail", "unknown"),
    "flaky": ("fail", "unknown"),
    "mix": ("fail", "unknown"),
}


def assert_sensible(result: TortureResult) -> None:
    report = result.render()
    assert result.ok, report
    assert result.injected >= 3, f"only {result.injected} faults injected\n{report}"
    counts = result.counts()
    for kind in ("read", "write"):
        assert counts.get(kind, {}).get("ok", 0) >= 200, f"too few ok {kind}s\n{report}"
    not_ok = sum(counts[k].get(o, 0) for k in counts for o in _NOT_OK_EXPECTED[result.config.nemesis])
    assert not_ok >= 1, f"the faults never troubled a client\n{report}"
    for op in result.ops:
        if op.outcome == "ok" and op.kind == "read":
            assert op.result is None or op.result.startswith(b"c"), op
    # The files on disk hold the same run.
    out = result.config.out
    assert read_history(out / "history.jsonl") == result.ops
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["faults_injected"] == result.injected
    assert summary["operations_checked"] == result.verdict.ops_checked  # type: ignore[union-attr]
    faults = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    assert faults[-1]["action"] == "heal", faults[-1]


@pytest.mark.parametrize("nemesis", SCHEDULES)
def test_schedule(tmp_path, nemesis: str) -> None:
    seed = SEED_OFFSET + 100 + SCHEDULES.index(nemesis)
    result = run_torture(
        TortureConfig(out=tmp_path / nemesis, nemesis=nemesis, time=RUN_SECONDS, tail=TAIL_SECONDS, seed=seed)
    )
    assert_sensible(result)
    actions = {e.action for e in result.events}
    expected = {
        "kill-leader": {"kill", "restart"},
        "kill-random": {"kill", "restart"},
        "pause": {"pause", "resume"},
        "partition": {"partition", "heal"},
        "isolate-leader": {"isolate", "heal"},
        "flaky": {"flaky", "heal"},
        "mix": {"heal"},
    }[nemesis]
    assert expected <= actions, (expected, actions)


def test_crash_recovery_every_node_killed_during_write_burst(tmp_path) -> None:
    """kill -9 every node at once while ten clients write, three times;
    restart them all: every acknowledged write is there (or overwritten by a
    later write), every node holds the same state, and the history -- writes,
    then final reads -- is linearizable.

    A node keeps everything it must not lose (log, term and vote, applied
    state, its index) in one LMDB file, every change one transaction
    committed with fsync; it writes no other file (the ``-lock`` file is
    LMDB's reader table, and the db's flock only excludes a second
    process). So a crash at any instant leaves a state some committed
    transaction wrote."""
    with Cluster(tmp_path) as c:
        c.start()
        c.leader()
        workload = Workload(c.rest_ports, WorkloadConfig(clients=10, keys=400, read_ratio=0.0), seed=SEED_OFFSET + 7)
        workload.start()
        try:
            for n in range(3):
                workload.wait_for_ok("write", 300 * (n + 1), timeout=60)
                c.kill_all()
                c.start()
                c.leader(timeout=30)
            workload.wait_for_ok("write", 300 * 3 + 100, timeout=60)
        finally:
            workload.stop()
        ops = workload.ops
        checks, verdict, state = final_checks(c, ops, workload.keys)
        report = "\n".join(f"{ch.name}: {ch.ok} {ch.detail}" for ch in checks)
        assert all(ch.passed for ch in checks), report
        counts = workload.counts()
        assert counts[("write", "ok")] >= 1000, counts
        assert counts[("write", "fail")] + counts[("write", "unknown")] >= 1, counts
        assert all(node.starts == 4 for node in c.nodes.values())
