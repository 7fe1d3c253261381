# test-case-name: tests.test_faults
"""Jepsen-style fault runs against a real dkv cluster.

    python -m dkv.torture --time 60 --nemesis mix --seed 7 --nodes 3 --clients 10 --workload txn --out DIR

Starts ``--nodes`` real ``dkv`` processes on loopback (free ports, a fault
proxy on every peer link, everything under ``DIR/cluster``), runs the
workload of ``dkv.testing.workload`` for ``--time`` seconds while the
nemesis of ``dkv.testing.nemesis`` injects faults, heals everything for the
last ``--tail`` seconds (the workload goes on), stops the clients, and runs
the checks of ``dkv.testing.checks`` and ``dkv.testing.applied_once`` (and,
for the ``txn`` and ``mixed`` workloads, of ``dkv.testing.revisions``).
``--workload lock`` runs the lock workload instead, with checks and files
of its own: see ``dkv.testing.lock_torture``.
Clients retry a write of unknown outcome with its idempotency key, up to
``--write-attempts`` attempts (``dkv.testing.retries``). Writes into DIR:

``history.jsonl``   every operation (``dkv.testing.history`` format: re-check
                    it with ``dkv.testing.linearizability.check``)
``requests.jsonl``  every request (serializable reads and reads at a
                    revision too): its operation, the node asked, the HTTP
                    status and the error, the revisions an etcd answer
                    reported; then every compaction a client asked for; for
                    reading a failing history
``faults.jsonl``    what the nemesis did, with monotonic timestamps (the
                    history's clock)
``summary.json``    configuration, operations by kind and outcome, what the
                    retries of writes achieved, faults, every check and the
                    linearizability verdict

prints a summary and exits 0 if every check passed, 1 on any violation
(with the checker's explanation), 2 if nothing was violated but the
linearizability search was inconclusive (out of steps). The node logs stay in
``DIR/cluster/*.log``. Every choice comes from ``--seed``; timing is real, so
a seed does not replay a run exactly.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.config import DEFAULT_PEER_TRANSPORT, PEER_TRANSPORTS
from dkv.testing import faketime
from dkv.testing.applied_once import applied_once
from dkv.testing.certs import ClusterCerts
from dkv.testing.checks import CheckResult, check_removed_stop, final_checks, render_check
from dkv.testing.cluster import Cluster
from dkv.testing.code_version import code_version
from dkv.testing.fault_schedule import run_schedule
from dkv.testing.gateway import COMPACTED
from dkv.testing.history import Op, op_to_json, write_history
from dkv.testing.linearizability import Verdict
from dkv.testing.lock_torture import LockTortureResult, run_lock_torture
from dkv.testing.nemesis import FAULT_ACTIONS, SCHEDULES, FaultEvent, Nemesis, NemesisConfig
from dkv.testing.retries import RetryCounts
from dkv.testing.revisions import check_read_at_revision, check_revision_order
from dkv.testing.workload import WORKLOADS, Compaction, Request, Workload, WorkloadConfig, history_ops, retry_counts

__all__ = ["TORTURE_WORKLOADS", "TortureConfig", "TortureResult", "history_checks", "main", "run_torture"]

#: ``--workload``: the KV workloads of ``dkv.testing.workload`` (run by
#: ``run_torture``) and ``lock``, the lock workload of
#: ``dkv.testing.lock_workload`` (run by ``dkv.testing.lock_torture``).
TORTURE_WORKLOADS = (*WORKLOADS, "lock")


@attrs.frozen(kw_only=True)
class TortureConfig:
    """One run. ``time`` is the workload's whole duration in seconds, of which
    the last ``tail`` are healed; faults start after ``warmup``. Node timings
    are the test harness's fast ones (``tick_ms``, ``election_ticks``,
    ``request_timeout`` seconds)."""

    out: Path = attrs.field(converter=Path)
    nemesis: str = attrs.field(default="mix", validator=attrs.validators.in_(SCHEDULES))
    time: float = 60.0
    tail: float = 6.0
    warmup: float = 1.0
    seed: int = 0
    nodes: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    clients: int = 10
    keys: int = 5
    #: ``kv`` (dkv's /v0), ``txn`` (etcd's gateway: cas, reads at a
    #: revision, compactions) or ``mixed``: see ``dkv.testing.workload``;
    #: ``lock``: ``dkv.testing.lock_torture`` (only ``clients`` and
    #: ``lock_ttl`` of the workload's settings apply).
    workload: str = attrs.field(default="kv", validator=attrs.validators.in_(TORTURE_WORKLOADS))
    #: The lock workload's lease TTL in seconds.
    lock_ttl: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    read_ratio: float = 0.5
    delete_ratio: float = 0.0
    serializable_ratio: float = 0.1
    cas_ratio: float = 0.6
    revision_read_ratio: float = 0.3
    compact_ratio: float = 0.002
    #: Attempts of a write whose outcome stays unknown (retried with its
    #: idempotency key; 1: never retry).
    write_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    request_timeout: float = 2.0
    tick_ms: int = 50
    election_ticks: int = 10
    check_timeout: float = 30.0
    #: Passed to the nodes: compact often, so restarted or cut-off nodes
    #: catch up by snapshot (None: the node's default).
    snapshot_entries: int | None = 1000
    snapshot_keep: int | None = 200
    nemesis_config: NemesisConfig = NemesisConfig()
    #: Peers talk mutual TLS (certificates made for the run, in ``out/certs``);
    #: the clients' REST port stays plaintext.
    peer_tls: bool = False
    #: The nodes' --peer-transport ("twisted", the default, or "grpc").
    peer_transport: str = attrs.field(default=DEFAULT_PEER_TRANSPORT, validator=attrs.validators.in_(PEER_TRANSPORTS))

    def node_args(self) -> list[str]:
        """Extra command-line arguments of every node (the snapshot settings)."""
        args = []
        if self.snapshot_entries:
            args += ["--snapshot-entries", str(self.snapshot_entries)]
        if self.snapshot_keep:
            args += ["--snapshot-keep-entries", str(self.snapshot_keep)]
        return args

    def cluster(self, extra_args: Sequence[str] = ()) -> Cluster:
        """The run's cluster, not yet started, in ``out/cluster``: its
        timings, seed, node arguments (then extra_args), peer TLS and peer
        transport. The KV, lock and soak runs all start theirs here."""
        return Cluster(
            self.out / "cluster",
            [chr(ord("a") + n) for n in range(self.nodes)],
            tick_ms=self.tick_ms,
            election_ticks=self.election_ticks,
            request_timeout=self.request_timeout,
            seed=self.seed,
            extra_args=[*self.node_args(), *extra_args],
            tls=ClusterCerts(self.out / "certs", client=False, client_cert_auth=False) if self.peer_tls else None,
            peer_transport=self.peer_transport,
        )

    def command(self) -> str:
        """The command line that repeats this run (as far as timing allows)."""
        args = [
            "python", "-m", "dkv.torture", "--time", f"{self.time:g}", "--tail", f"{self.tail:g}",
            "--nemesis", self.nemesis, "--seed", str(self.seed), "--nodes", str(self.nodes),
            "--clients", str(self.clients), "--keys", str(self.keys), "--out", str(self.out),
        ]  # fmt: skip
        if self.workload != _default("workload"):
            args += ["--workload", self.workload]
        if self.lock_ttl != _default("lock_ttl"):
            args += ["--lock-ttl", str(self.lock_ttl)]
        for flag, name in (
            *((flag, name) for flag, name, _ in _NUMBER_OPTIONS),
            ("--snapshot-entries", "snapshot_entries"),
            ("--snapshot-keep-entries", "snapshot_keep"),
            ("--write-attempts", "write_attempts"),
        ):
            value = getattr(self, name)
            if value != _default(name):
                args += [flag, f"{value or 0:g}"]
        default = NemesisConfig()
        for flag, value, usual in (
            ("--fault-seconds", self.nemesis_config.fault_seconds, default.fault_seconds),
            ("--quiet-seconds", self.nemesis_config.quiet_seconds, default.quiet_seconds),
        ):
            if value != usual:
                args += [flag, f"{value[0]:g},{value[1]:g}"]
        if self.peer_tls:
            args.append("--peer-tls")
        if self.peer_transport != DEFAULT_PEER_TRANSPORT:
            args += ["--peer-transport", self.peer_transport]
        return shlex.join(args)


#: The options that set a number of TortureConfig: (flag, field, help).
_NUMBER_OPTIONS = (
    ("--read-ratio", "read_ratio", "share of operations that are reads"),
    ("--delete-ratio", "delete_ratio", "share of writes that are deletes"),
    ("--serializable-ratio", "serializable_ratio", "share of reads that are serializable (checked for phantoms only)"),
    ("--cas-ratio", "cas_ratio", "txn: share of writes that are compare-and-swaps"),
    ("--revision-read-ratio", "revision_read_ratio", "txn: share of reads at a revision an earlier answer reported"),
    ("--compact-ratio", "compact_ratio", "txn: share of operations that compact the history"),
    ("--request-timeout", "request_timeout", "the nodes' --request-timeout"),
)


def _default(name: str) -> Any:
    """TortureConfig's default for the field name: the one place the command
    line (``command()``, ``parse_args``) takes it from."""
    return attrs.fields_dict(TortureConfig)[name].default


@attrs.frozen(kw_only=True)
class TortureResult:
    """What a run did and found. ``ok`` is True when every check passed;
    ``violation`` when any check was violated (or the run itself broke)."""

    config: TortureConfig
    requests: list[Request]
    events: list[FaultEvent]
    checks: list[CheckResult]
    verdict: Verdict | None
    errors: list[str]
    heal_time: float | None
    seconds: dict[str, float]
    #: What the nodes said about snapshots: node -> snapshot index at the
    #: end, and how many snapshots were installed from a leader (logs).
    snapshots: dict[str, Any] = attrs.field(factory=dict)
    #: ``code_version()`` when the run started.
    code: str = "unknown"
    #: The compactions clients asked for (the txn workload).
    compactions: list[Compaction] = attrs.field(factory=list)

    @property
    def ops(self) -> list[Op]:
        return history_ops(self.requests)

    @property
    def side_reads(self) -> list[Request]:
        """Reads kept out of the history: serializable, at a revision."""
        return [r for r in self.requests if r.consistency != "linearizable"]

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.passed for c in self.checks)

    @property
    def violation(self) -> bool:
        return bool(self.errors) or any(c.ok is False for c in self.checks)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1 if self.violation else 2

    def counts(self) -> dict[str, dict[str, int]]:
        """kind -> outcome -> number of operations."""
        out: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(Counter((op.kind, op.outcome) for op in self.ops).items()):
            out.setdefault(kind, {})[outcome] = n
        side = Counter((r.consistency, r.op.outcome) for r in self.side_reads)
        for (consistency, outcome), n in sorted(side.items()):
            label = "at a revision" if consistency == "revision" else consistency
            out.setdefault(f"read ({label}, not in the history)", {})[outcome] = n
        return out

    def txn_counts(self) -> dict[str, dict[str, int]]:
        """What the txn workload's answers said: how many ok cas swapped, how
        many ok reads at a revision came back (and how many were refused as
        compacted), how the compactions went. Empty for the kv workload."""
        counted = {
            "cas": Counter(
                "swapped" if op.swapped else "not swapped" for op in self.ops if op.kind == "cas" and op.outcome == "ok"
            ),
            "reads at a revision": Counter(
                "compacted" if COMPACTED in r.detail else r.op.outcome
                for r in self.requests
                if r.consistency == "revision"
            ),
            "compactions": Counter(
                "already compacted" if COMPACTED in c.detail else c.outcome for c in self.compactions
            ),
        }
        return {what: dict(sorted(by.items())) for what, by in counted.items() if by}

    def retries(self) -> RetryCounts:
        """What retrying writes of unknown outcome achieved."""
        return retry_counts(self.requests)

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
                "nemesis": cfg.nemesis,
                "time": cfg.time,
                "tail": cfg.tail,
                "seed": cfg.seed,
                "nodes": cfg.nodes,
                "clients": cfg.clients,
                "keys": cfg.keys,
                "workload": cfg.workload,
                "read_ratio": cfg.read_ratio,
                "delete_ratio": cfg.delete_ratio,
                "serializable_ratio": cfg.serializable_ratio,
                "cas_ratio": cfg.cas_ratio,
                "revision_read_ratio": cfg.revision_read_ratio,
                "compact_ratio": cfg.compact_ratio,
                "write_attempts": cfg.write_attempts,
                "request_timeout": cfg.request_timeout,
                "tick_ms": cfg.tick_ms,
                "fault_seconds": list(cfg.nemesis_config.fault_seconds),
                "quiet_seconds": list(cfg.nemesis_config.quiet_seconds),
            },  # fmt: skip
            "operations": self.counts(),
            "operations_total": len(self.requests),
            "txn": self.txn_counts(),
            "retries": self.retries().to_json(),
            "operations_checked": self.verdict.ops_checked if self.verdict is not None else None,
            "faults": self.faults(),
            "faults_injected": self.injected,
            "snapshots": self.snapshots,
            "checks": [c.to_json() for c in self.checks],
            "linearizability": None
            if self.verdict is None
            else {
                "ok": self.verdict.ok,
                "timed_out": self.verdict.timed_out,
                "key": None if self.verdict.key is None else self.verdict.key.decode("latin-1"),
                "ops_checked": self.verdict.ops_checked,
                "explanation": self.verdict.explanation,
            },
            "errors": self.errors,
            "seconds": self.seconds,
        }

    def render(self) -> str:
        """A readable summary for a terminal."""
        cfg = self.config
        lines = [
            f"dkv torture: nemesis={cfg.nemesis} workload={cfg.workload} seed={cfg.seed} nodes={cfg.nodes} "
            f"clients={cfg.clients} keys={cfg.keys} time={cfg.time:g}s (healed tail {cfg.tail:g}s)",
            f"operations: {len(self.requests)}"
            + "".join(
                f"\n  {kind:<6} " + ", ".join(f"{o} {n}" for o, n in by.items()) for kind, by in self.counts().items()
            ),
            *(f"{what}: " + ", ".join(f"{o} {n}" for o, n in by.items()) for what, by in self.txn_counts().items()),
            self.retries().render(),
            f"faults injected: {self.injected} "
            + (", ".join(f"{a} {n}" for a, n in self.faults().items()) or "(none)"),
        ]
        if self.snapshots:
            lines.append(
                "snapshots: index at the end "
                + ", ".join(f"{i} {n}" for i, n in self.snapshots.get("index", {}).items())
                + f"; {self.snapshots.get('installed', 0)} installed from a leader"
            )
        lines.append("checks:")
        lines += [render_check(c) for c in self.checks]
        for e in self.errors:
            lines.append(f"  FAIL run: {e}")
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        verdict = {0: "PASS", 1: "VIOLATION", 2: "INCONCLUSIVE"}[self.exit_status]
        lines.append(f"result: {verdict}   output in {cfg.out}   (code {self.code})")
        if self.exit_status:
            lines.append(f"reproduce (timing differs): {cfg.command()}")
        return "\n".join(lines)


def run_torture(cfg: TortureConfig, progress: Callable[[str], None] = lambda s: None) -> TortureResult:
    """Run one fault test (see the module docstring) and write its files into
    ``cfg.out``. Every process started is gone when this returns or raises.
    The ``lock`` workload is ``dkv.testing.lock_torture.run_lock_torture``'s."""
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"run_torture runs the workloads {WORKLOADS}, not {cfg.workload!r}")
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    seconds: dict[str, float] = {}
    started = time.monotonic()
    code = code_version()
    with cfg.cluster() as cluster:
        clocks = faketime.for_schedule(cluster, cfg.nemesis, out / "clocks")
        cluster.start()
        cluster.leader(timeout=30)
        seconds["start"] = time.monotonic() - started
        progress(f"cluster of {cfg.nodes} up in {cluster.dir}; running {cfg.nemesis} for {cfg.time:g}s")
        workload = Workload(
            cluster.rest_ports,
            WorkloadConfig(
                clients=cfg.clients,
                keys=cfg.keys,
                read_ratio=cfg.read_ratio,
                delete_ratio=cfg.delete_ratio,
                serializable_ratio=cfg.serializable_ratio,
                workload=cfg.workload,
                cas_ratio=cfg.cas_ratio,
                revision_read_ratio=cfg.revision_read_ratio,
                compact_ratio=cfg.compact_ratio,
                timeout=cluster.client_timeout,
                write_attempts=cfg.write_attempts,
            ),
            seed=cfg.seed,
        )
        nemesis = Nemesis(
            cluster, cfg.nemesis, random.Random(f"{cfg.seed}/nemesis"), cfg.nemesis_config, clocks=clocks
        )
        t0 = time.monotonic()
        heal_time = run_schedule(workload, nemesis, cfg, errors, progress)
        seconds["workload"] = time.monotonic() - t0
        requests = workload.requests
        compactions = workload.compactions
        progress(f"{len(requests)} operations; checking")
        t1 = time.monotonic()
        checks, verdict = history_checks(cluster, cfg, workload, requests, nemesis, heal_time)
        seconds["checks"] = time.monotonic() - t1
        events = nemesis.events
        snapshots = {
            "index": {i: (st or {}).get("snapshot_index") for i, st in cluster.statuses(cluster.ids).items()},
            "installed": sum(cluster.node(i).log_text().count("installed a snapshot at index") for i in cluster.ids),
        }
    seconds["total"] = time.monotonic() - started
    result = TortureResult(
        config=cfg,
        requests=requests,
        events=events,
        checks=checks,
        verdict=verdict,
        errors=errors,
        heal_time=heal_time,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        snapshots=snapshots,
        code=code,
        compactions=compactions,
    )
    write_files(result)
    return result


def history_checks(
    cluster: Cluster,
    cfg: TortureConfig,
    workload: Workload,
    requests: list[Request],
    nemesis: Nemesis,
    heal_time: float | None,
) -> tuple[list[CheckResult], Verdict | None]:
    """Every check of the fault suite on a healed cluster whose workload has
    stopped (the soak runs them too): ``final_checks``, applied-once, the
    revisions' (txn and mixed workloads), recovered, removed-stop; and the
    linearizability verdict."""
    checks, verdict, _ = final_checks(
        cluster,
        history_ops(requests),
        workload.keys,
        timeout=cfg.check_timeout,
        unexpected_exits=nemesis.unexpected_exits,
        stale=workload.side_reads,
    )
    retried = {(r.op.key, r.op.value) for r in requests if r.attempts > 1}
    checks.append(applied_once(cluster, history_ops(requests), retried, timeout=cfg.check_timeout))
    if cfg.workload != "kv":
        checks += [check_revision_order(requests), check_read_at_revision(requests)]
    checks.append(_recovered(requests, heal_time))
    if cfg.nemesis in ("membership", "mix"):
        checks.append(check_removed_stop(nemesis.events, nemesis.anomalies))
    return checks, verdict


def _recovered(requests: Sequence[Request], heal_time: float | None) -> CheckResult:
    """After the final heal, the cluster serves writes (or cas) and reads again."""
    if heal_time is None:
        return CheckResult(name="recovered", ok=False, detail="the run never reached the final heal")
    after = Counter(
        "read" if r.op.kind == "read" else "write"
        for r in requests
        if r.op.outcome == "ok" and r.op.invoke >= heal_time
    )
    if after["write"] and after["read"]:
        return CheckResult(
            name="recovered",
            ok=True,
            detail=f"{after['write']} ok writes and cas, {after['read']} ok reads after healing",
        )
    return CheckResult(
        name="recovered",
        ok=False,
        detail=f"only {after['write']} ok writes and cas and {after['read']} ok reads began after the final heal",
    )


def write_files(result: TortureResult) -> None:
    out = result.config.out
    write_history(out / "history.jsonl", result.ops)
    with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
        for r in result.requests:
            line = {"op": json.loads(op_to_json(r.op)), **r.to_json()}
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
        for c in result.compactions:
            f.write(json.dumps(c.to_json(), separators=(",", ":")) + "\n")
    with open(out / "faults.jsonl", "w", encoding="utf-8") as f:
        for e in result.events:
            f.write(json.dumps(e.to_json(), separators=(",", ":")) + "\n")
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(result.summary(), f, indent=2)
        f.write("\n")


def parse_args(argv: Sequence[str] | None = None) -> TortureConfig:
    p = argparse.ArgumentParser(
        prog="python -m dkv.torture",
        description="Run a workload against a real dkv cluster while injecting faults; check the history.",
        epilog="--soak DURATION runs the soak instead (dkv.testing.soak): python -m dkv.torture --soak 1m --help",
    )
    p.add_argument("--time", type=float, default=_default("time"), help="seconds of workload, healed tail included")
    p.add_argument(
        "--tail", type=float, default=_default("tail"), help="seconds of workload after everything is healed"
    )
    p.add_argument("--nemesis", choices=SCHEDULES, default=_default("nemesis"))
    p.add_argument("--seed", type=int, default=_default("seed"))
    p.add_argument("--nodes", type=int, default=_default("nodes"))
    p.add_argument("--clients", type=int, default=_default("clients"))
    p.add_argument("--keys", type=int, default=_default("keys"))
    p.add_argument(
        "--workload",
        choices=TORTURE_WORKLOADS,
        default=_default("workload"),
        help="kv: dkv's /v0 reads and writes; txn: etcd's gateway, with compare-and-swap Txns, reads at a "
        "revision and compactions; mixed: either, at random for each operation; lock: --clients clients take "
        "turns holding one lease-bound lock (etcd's recipe on the gateway), checked that no two holders "
        "overlap (--keys, the ratios and --write-attempts do not apply)",
    )
    p.add_argument(
        "--lock-ttl",
        type=int,
        default=_default("lock_ttl"),
        help="lock: the TTL in seconds of each lock client's lease (default %(default)s)",
    )
    for flag, name, text in _NUMBER_OPTIONS:
        p.add_argument(flag, type=float, default=_default(name), help=text)
    p.add_argument(
        "--write-attempts",
        type=int,
        default=_default("write_attempts"),
        help="attempts of a write whose outcome is unknown, retried with its idempotency key (1: no retry)",
    )
    p.add_argument(
        "--fault-seconds",
        type=_range,
        default=NemesisConfig().fault_seconds,
        metavar="LOW,HIGH",
        help="how long each fault lasts (uniform); default 2,4",
    )
    p.add_argument(
        "--quiet-seconds",
        type=_range,
        default=NemesisConfig().quiet_seconds,
        metavar="LOW,HIGH",
        help="pause between faults (uniform); default 1,2.5",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        default=_default("snapshot_entries"),
        help="the nodes' --snapshot-entries (0: their default); small, so snapshots get installed",
    )
    p.add_argument(
        "--snapshot-keep-entries",
        type=int,
        default=_default("snapshot_keep"),
        help="the nodes' --snapshot-keep-entries",
    )
    p.add_argument(
        "--peer-tls", action="store_true", help="peers talk mutual TLS (a CA and certificates made for the run)"
    )
    p.add_argument(
        "--peer-transport",
        choices=PEER_TRANSPORTS,
        default=DEFAULT_PEER_TRANSPORT,
        help=f"the nodes' --peer-transport (default {DEFAULT_PEER_TRANSPORT})",
    )
    p.add_argument("--out", required=True, help="directory for the history, fault log, summary and node logs")
    a = p.parse_args(argv)
    if a.time <= a.tail:
        p.error("--time must exceed --tail")
    if a.write_attempts < 1:
        p.error("--write-attempts must be at least 1")
    if a.lock_ttl < 1:
        p.error("--lock-ttl must be at least 1")
    return TortureConfig(
        out=a.out, nemesis=a.nemesis, time=a.time, tail=a.tail, seed=a.seed, nodes=a.nodes, clients=a.clients,
        keys=a.keys, workload=a.workload, **{name: getattr(a, name) for _, name, _ in _NUMBER_OPTIONS},
        write_attempts=a.write_attempts, lock_ttl=a.lock_ttl,
        snapshot_entries=a.snapshot_entries or None, snapshot_keep=a.snapshot_keep_entries or None,
        nemesis_config=NemesisConfig(fault_seconds=a.fault_seconds, quiet_seconds=a.quiet_seconds),
        peer_tls=a.peer_tls, peer_transport=a.peer_transport,
    )  # fmt: skip


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH seconds, not {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, not {text!r}")
    return (low, high)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    run: Callable[..., TortureResult | LockTortureResult] = (
        run_lock_torture if cfg.workload == "lock" else run_torture
    )
    try:
        result = run(cfg, progress=lambda s: print(f"[torture] {s}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("[torture] interrupted; every node was stopped", file=sys.stderr)
        return 130
    print(result.render())
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
