"""The lock workload on a real 3-node dkv, through the fault suite's own
path (``python -m dkv.torture --workload lock``: ``parse_args`` then
``dkv.testing.lock_torture.run_lock_torture``), while the leader is killed
or the nodes are partitioned: no two holders' safe intervals overlap
(``dkv.testing.lock_check``), the lock keeps changing hands, and the
cluster's own final checks pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dkv.testing.lock_check import read_attempts
from dkv.testing.lock_torture import run_lock_torture
from dkv.testing.torture import parse_args

pytestmark = pytest.mark.process


@pytest.mark.parametrize("schedule", ["kill-leader", "partition"])
def test_no_two_lock_holders_overlap_under_faults(tmp_path: Path, schedule: str) -> None:
    out = tmp_path / "run"
    cfg = parse_args(
        ["--workload", "lock", "--nemesis", schedule, "--time", "18", "--tail", "3", "--seed", "13",
         "--clients", "4", "--lock-ttl", "2", "--fault-seconds", "2,3", "--quiet-seconds", "1,2", "--out", str(out)]
    )  # fmt: skip
    result = run_lock_torture(cfg)
    verdict = result.verdict
    assert verdict.ok, verdict.explain()
    assert result.injected >= 2, verdict.figures
    assert verdict.figures["acquisitions"] >= 10, verdict.figures
    assert verdict.figures["contended_attempts"] >= 1, verdict.figures
    assert result.exit_status == 0, result.render()
    assert read_attempts(out / "attempts.jsonl") == result.attempts
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["locks"] == verdict.figures
    assert len((out / "faults.jsonl").read_text().splitlines()) == len(result.events)
