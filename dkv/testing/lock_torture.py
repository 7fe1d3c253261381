# test-case-name: tests.test_lock_faults,tests.test_lock_torture_args
"""``python -m dkv.torture --workload lock``: the lock workload under faults.

    python -m dkv.torture --workload lock --nemesis kill-leader --time 30 --seed 3 --clients 4 --lock-ttl 2 --out DIR

Starts ``--nodes`` real ``dkv`` processes as ``dkv.testing.torture`` does,
runs ``--clients`` clients of ``dkv.testing.lock_workload`` (each takes
turns holding one lease-bound lock, leases of ``--lock-ttl`` seconds) for
``--time`` seconds while the nemesis injects faults, heals everything for
the last ``--tail`` seconds (the clients go on), stops the clients, and
checks:

``locks``           ``dkv.testing.lock_check.check_holds``: no two holders'
                    safe intervals overlap;
``recovered``       some client acquired the lock after the final heal;
``leader``          one leader is agreed on again;
``released``        no key is left under the lock's prefix once the clients
                    stopped (each was deleted by its holder, or by the
                    expiry of its lease);
``applied``, ``hash-kv``, ``node-logs``, ``removed-stop``: as in
                    ``dkv.testing.checks`` (the KV history's checks do
                    not apply: the lock workload keeps no KV history).

Writes into DIR: ``attempts.jsonl`` (every attempt to acquire, with its
hold: ``dkv.testing.lock_check.read_attempts`` reads it back),
``faults.jsonl`` (what the nemesis did, on the attempts' clock) and
``summary.json``; the node logs stay in ``DIR/cluster/*.log``. The exit
status is ``TortureResult``'s: 0 every check passed, 1 a violation, 2
inconclusive.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing import faketime
from dkv.testing.checks import (
    CheckResult,
    check_hash_kv,
    check_removed_stop,
    render_check,
    scan_logs,
    wait_applied_equal,
    wait_leader,
)
from dkv.testing.cluster import Cluster
from dkv.testing.code_version import code_version
from dkv.testing.fault_schedule import run_schedule
from dkv.testing.lock_check import Attempt, LockVerdict, check_holds, write_attempts
from dkv.testing.lock_workload import LockConfig, LockWorkload, prefix_end
from dkv.testing.nemesis import FAULT_ACTIONS, FaultEvent, Nemesis
from dkv.testing.poll import Timeout, wait_until

if TYPE_CHECKING:
    from dkv.testing.torture import TortureConfig

__all__ = ["LockTortureResult", "run_lock_torture"]


@attrs.frozen(kw_only=True)
class LockTortureResult:
    """What a lock run did and found; ``ok``, ``violation`` and
    ``exit_status`` mean what they mean for ``TortureResult``."""

    config: TortureConfig
    attempts: list[Attempt]
    verdict: LockVerdict
    events: list[FaultEvent]
    checks: list[CheckResult]
    errors: list[str]
    heal_time: float | None
    seconds: dict[str, float]
    code: str = "unknown"

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.passed for c in self.checks)

    @property
    def violation(self) -> bool:
        return bool(self.errors) or any(c.ok is False for c in self.checks)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1 if self.violation else 2

    def faults(self) -> dict[str, int]:
        """action -> number of times, for the actions that inject a fault."""
        return dict(sorted(Counter(e.action for e in self.events if e.action in FAULT_ACTIONS).items()))

    @property
    def injected(self) -> int:
        return sum(self.faults().values())

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def summary(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "ok": self.ok,
            "exit_status": self.exit_status,
            "command": cfg.command(),
            "code": self.code,
            "config": {
                "workload": cfg.workload,
                "nemesis": cfg.nemesis,
                "time": cfg.time,
                "tail": cfg.tail,
                "seed": cfg.seed,
                "nodes": cfg.nodes,
                "clients": cfg.clients,
                "lock_ttl": cfg.lock_ttl,
                "request_timeout": cfg.request_timeout,
                "tick_ms": cfg.tick_ms,
                "fault_seconds": list(cfg.nemesis_config.fault_seconds),
                "quiet_seconds": list(cfg.nemesis_config.quiet_seconds),
            },
            "locks": self.verdict.figures,
            "faults": self.faults(),
            "faults_injected": self.injected,
            "checks": [c.to_json() for c in self.checks],
            "errors": self.errors,
            "seconds": self.seconds,
        }

    def render(self) -> str:
        """A readable summary for a terminal."""
        cfg = self.config
        f = self.verdict.figures
        outcomes = ", ".join(f"{o} {n}" for o, n in f["attempts_by_outcome"].items())
        ends = ", ".join(f"{e} {n}" for e, n in f["holds_by_end"].items())
        lines = [
            f"dkv torture: nemesis={cfg.nemesis} workload=lock seed={cfg.seed} nodes={cfg.nodes} "
            f"clients={cfg.clients} lock-ttl={cfg.lock_ttl}s time={cfg.time:g}s (healed tail {cfg.tail:g}s)",
            f"attempts: {f['attempts']}" + (f" ({outcomes})" if outcomes else ""),
            f"acquisitions: {f['acquisitions']}"
            + (f" (ended: {ends})" if ends else "")
            + f"; {f['safe_seconds_held']:g}s held safely",
            f"contended attempts: {f['contended_attempts']}",
            f"holds ended by lease loss: {f['holds_ended_by_lease_loss']}; whose lease may have lapsed: "
            f"{f['holds_whose_lease_may_have_lapsed']}; acquired after a possible lapse: "
            f"{f['holds_acquired_after_a_possible_lapse']}",
            f"faults injected: {self.injected} "
            + (", ".join(f"{a} {n}" for a, n in self.faults().items()) or "(none)"),
            "checks:",
            *(render_check(c) for c in self.checks),
            *(f"  FAIL run: {e}" for e in self.errors),
            "timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
        ]
        verdict = {0: "PASS", 1: "VIOLATION", 2: "INCONCLUSIVE"}[self.exit_status]
        lines.append(f"result: {verdict}   output in {cfg.out}   (code {self.code})")
        if self.exit_status:
            lines.append(f"reproduce (timing differs): {cfg.command()}")
        return "\n".join(lines)


def run_lock_torture(cfg: TortureConfig, progress: Callable[[str], None] = lambda s: None) -> LockTortureResult:
    """Run one lock fault test (see the module docstring) and write its
    files into ``cfg.out``. Every process started is gone when this returns
    or raises."""
    if cfg.workload != "lock":
        raise ValueError(f"run_lock_torture runs the lock workload, not {cfg.workload!r}")
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    seconds: dict[str, float] = {}
    started = time.monotonic()
    code = code_version()
    lock_config = LockConfig(clients=cfg.clients, ttl=cfg.lock_ttl)
    with cfg.cluster() as cluster:
        clocks = faketime.for_schedule(cluster, cfg.nemesis, out / "clocks")
        cluster.start()
        cluster.leader(timeout=30)
        seconds["start"] = time.monotonic() - started
        progress(f"cluster of {cfg.nodes} up in {cluster.dir}; running {cfg.nemesis} for {cfg.time:g}s")
        workload = LockWorkload(cluster.rest_ports, lock_config, seed=cfg.seed)
        nemesis = Nemesis(
            cluster, cfg.nemesis, random.Random(f"{cfg.seed}/nemesis"), cfg.nemesis_config, clocks=clocks
        )
        t0 = time.monotonic()
        heal_time = run_schedule(workload, nemesis, cfg, errors, progress)
        seconds["workload"] = time.monotonic() - t0
        attempts = workload.attempts
        progress(f"{len(attempts)} lock attempts; checking")
        t1 = time.monotonic()
        verdict = check_holds(attempts)
        checks = [_locks(verdict), _recovered(attempts, heal_time), wait_leader(cluster, cfg.check_timeout)]
        checks.append(_released(cluster, lock_config.prefix, cfg.check_timeout))
        checks.append(wait_applied_equal(cluster, cfg.check_timeout))
        checks.append(check_hash_kv(cluster))
        checks.extend(scan_logs(cluster, nemesis.unexpected_exits))
        if cfg.nemesis in ("membership", "mix"):
            checks.append(check_removed_stop(nemesis.events, nemesis.anomalies))
        seconds["checks"] = time.monotonic() - t1
        events = nemesis.events
    seconds["total"] = time.monotonic() - started
    result = LockTortureResult(
        config=cfg,
        attempts=attempts,
        verdict=verdict,
        events=events,
        checks=checks,
        errors=errors,
        heal_time=heal_time,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        code=code,
    )
    write_files(result)
    return result


def _locks(verdict: LockVerdict) -> CheckResult:
    f = verdict.figures
    if not verdict.ok:
        return CheckResult(
            name="locks", ok=False, detail=f"{f['violations']} pairs of holders overlap:\n{verdict.explain()}"
        )
    return CheckResult(
        name="locks",
        ok=True,
        detail=f"no two of {f['acquisitions']} holders overlap ({f['safe_seconds_held']:g}s held safely)",
    )


def _recovered(attempts: list[Attempt], heal_time: float | None) -> CheckResult:
    """After the final heal, the lock changes hands again."""
    if heal_time is None:
        return CheckResult(name="recovered", ok=False, detail="the run never reached the final heal")
    after = sum(1 for a in attempts if a.hold is not None and a.hold.acquired >= heal_time)
    if after:
        return CheckResult(name="recovered", ok=True, detail=f"the lock was acquired {after} times after healing")
    return CheckResult(name="recovered", ok=False, detail="no client acquired the lock after the final heal")


def _released(cluster: Cluster, prefix: bytes, timeout: float) -> CheckResult:
    """Poll until a linearizable range of the lock's prefix, on any node that
    answers, finds no key: the stopped clients' keys were deleted, or expired
    with their leases."""
    body = {"key": b64_encode(prefix), "range_end": b64_encode(prefix_end(prefix)), "count_only": True}
    last: dict[str, Any] = {}

    def empty() -> str | None:
        for node in cluster.running():
            status, answer = cluster.request(node, "POST", "/v3/kv/range", body)
            last.update(node=node, status=status, answer=answer)
            if status == 200:
                return node if int(answer.get("count") or 0) == 0 else None
        return None

    try:
        node = wait_until(empty, timeout, "no key under the lock's prefix", interval=0.2)
    except Timeout:
        return CheckResult(
            name="released", ok=False, detail=f"keys still under the lock's prefix after {timeout:g}s: {last}"
        )
    return CheckResult(name="released", ok=True, detail=f"no key left under the lock's prefix ({node} says)")


def write_files(result: LockTortureResult) -> None:
    out = result.config.out
    write_attempts(out / "attempts.jsonl", result.attempts)
    with open(out / "faults.jsonl", "w", encoding="utf-8") as f:
        for e in result.events:
            f.write(json.dumps(e.to_json(), separators=(",", ":")) + "\n")
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(result.summary(), f, indent=2)
        f.write("\n")
