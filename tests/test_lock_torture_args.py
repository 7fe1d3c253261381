"""``python -m dkv.torture --workload lock``: the command line, and the
summary of a lock run (``dkv.testing.lock_torture``), without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkv.testing.checks import CheckResult
from dkv.testing.lock_check import Attempt, Hold, check_holds
from dkv.testing.lock_torture import LockTortureResult, run_lock_torture
from dkv.testing.nemesis import FaultEvent, NemesisConfig
from dkv.testing.torture import TortureConfig, parse_args, run_torture
from dkv.testing.workload import WorkloadConfig


def test_lock_workload_parses_and_its_command_round_trips(tmp_path: Path) -> None:
    cfg = parse_args(
        ["--workload", "lock", "--nemesis", "kill-leader", "--time", "30", "--seed", "3", "--clients", "4",
         "--lock-ttl", "3", "--fault-seconds", "2,3", "--out", str(tmp_path)]
    )  # fmt: skip
    assert (cfg.workload, cfg.nemesis, cfg.time, cfg.seed, cfg.clients, cfg.lock_ttl) == (
        "lock", "kill-leader", 30, 3, 4, 3,
    )  # fmt: skip
    assert cfg.nemesis_config == NemesisConfig(fault_seconds=(2.0, 3.0))
    command = cfg.command()
    assert "--workload lock" in command and "--lock-ttl 3" in command
    assert parse_args(command.split()[3:]) == cfg
    default = parse_args(["--workload", "lock", "--out", str(tmp_path)])
    assert default.lock_ttl == 2 and "--lock-ttl" not in default.command()
    assert parse_args(default.command().split()[3:]) == default


def test_lock_options_refuse_nonsense(tmp_path: Path) -> None:
    for bad in (["--lock-ttl", "0"], ["--lock-ttl", "1.5"], ["--workload", "locks"]):
        with pytest.raises(SystemExit):
            parse_args(["--out", str(tmp_path), *bad])


def test_each_runner_refuses_the_other_s_workload(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lock"):
        WorkloadConfig(workload="lock")
    with pytest.raises(ValueError, match="run_torture"):
        run_torture(TortureConfig(out=tmp_path, workload="lock"))
    with pytest.raises(ValueError, match="run_lock_torture"):
        run_lock_torture(TortureConfig(out=tmp_path, workload="kv"))
    assert not list(tmp_path.iterdir())  # refused before starting anything


def _result(tmp_path: Path, checks: list[CheckResult]) -> LockTortureResult:
    hold = Hold(client=0, key="/l/c0-1", lease=1, ttl=2.0, acquired=1.0, ended=1.5, end="released", renewals=[0.5, 1.0])
    attempts = [
        Attempt(client=0, started=0.5, finished=1.5, contended=False, outcome="acquired", hold=hold),
        Attempt(client=1, started=0.6, finished=1.2, contended=True, outcome="error", detail="grant: boom"),
    ]
    return LockTortureResult(
        config=TortureConfig(out=tmp_path, workload="lock", nemesis="kill-leader", seed=3),
        attempts=attempts,
        verdict=check_holds(attempts),
        events=[FaultEvent(time=1.0, action="kill", nodes=("a",)), FaultEvent(time=2.0, action="restart")],
        checks=checks,
        errors=[],
        heal_time=3.0,
        seconds={"total": 9.0},
    )


def test_the_summary_says_what_happened_and_maps_checks_to_exit_statuses(tmp_path: Path) -> None:
    passed = _result(tmp_path, [CheckResult(name="locks", ok=True, detail="fine")])
    text = passed.render()
    expected = (
        "attempts: 2 (acquired 1, error 1)", "acquisitions: 1", "contended attempts: 1",
        "holds ended by lease loss: 0", "faults injected: 1 kill 1", "PASS locks: fine", "result: PASS",
    )  # fmt: skip
    for line in expected:
        assert line in text, text
    assert "reproduce" not in text and passed.exit_status == 0
    summary = passed.summary()
    assert summary["locks"]["acquisitions"] == 1 and summary["faults_injected"] == 1
    assert summary["config"]["workload"] == "lock" and "--workload lock" in summary["command"]

    failed = _result(tmp_path, [CheckResult(name="locks", ok=False, detail="overlap")])
    assert failed.exit_status == 1 and "result: VIOLATION" in failed.render()
    assert "reproduce (timing differs): python -m dkv.torture" in failed.render()
    unsure = _result(tmp_path, [CheckResult(name="released", ok=None, detail="?")])
    assert unsure.exit_status == 2 and "result: INCONCLUSIVE" in unsure.render()
