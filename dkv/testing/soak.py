# test-case-name: tests.test_soak
"""``python -m dkv.torture --soak 2h``: hours of mixed load and faults, then
the fault suite's checks and the resource criteria.

    python -m dkv.torture --soak 30m --out DIR [--fault-every 60s] [--rss-warmup 5m] [--seed N]

Starts a cluster as ``dkv.testing.torture`` does, with automatic compaction
on (``--auto-compaction-mode periodic --auto-compaction-retention``), the
nodes' idempotency window at ``--idempotency-window`` (2 min) and
fake wall clocks when libfaketime is installed, and runs for the whole
duration, on a fixed key set:

- the ``mixed`` workload of ``dkv.testing.workload`` (``/v0`` puts and gets,
  etcd gateway Txns -- compare-and-swap -- ranges, reads at a revision and
  compactions), whose history is checked for linearizability;
- the side workloads of ``dkv.testing.soak_side``: a watch on the whole
  keyspace and leases granted, kept alive, revoked and left to expire;
- a fault about every ``--fault-every`` seconds, taking every fault of
  ``dkv.testing.nemesis`` in turns (clock steps too), healed for the
  last ``--tail`` seconds;
- ``dkv.testing.soak_sampler`` every ``--sample-every`` seconds.

Then it judges (``dkv.testing.soak_criteria``), each PASS or FAIL:

``history``    every check of the fault suite (``torture.history_checks``)
               and the linearizability verdict;
``watch``      events in revision order, no revision skipped;
``leases``     no key outlives its revoke, no kept-alive lease expires early;
``rss``        each node process's anonymous RSS (``RssAnon``) at the end
               is at most ``--rss-tolerance`` (10%) above its value
               ``--rss-warmup`` after it started (processes that did not
               live that long, restarted by a fault, are listed, not
               judged); VmRSS and its file-backed part (``RssFile``) are
               shown beside it, not judged: file pages are mostly the LMDB
               db's memory map, resident as the db is used, clean page
               cache the kernel reclaims, and follow the db's size, which
               ``db-size`` judges (``soak_criteria.rss_criterion``);
``fds``        each node process's open descriptors at the end are at most
               what they were after the warm-up plus the clients' share
               (clients + 8, or 10%);
``db-size``    each db file's largest size in the second half of the run
               (after the warm-up) is at most 25% or 4 MiB above its largest
               in the first half: the fixed key set's history is compacted
               (what the db holds then is that history's retention and the
               idempotency records of the last window: a record per write);
``log``        every warning-level node log line appeared within a fault's
               window (from just before it was injected to ``--log-grace``
               seconds after it was undone), and is listed with that fault;
               any other line is unexplained and fails.

It prints the table and writes ``DIR/soak.json`` (config, samples, criteria,
log lines), ``DIR/soak.png`` (``dkv.testing.soak_chart``: RSS (anon dashed), fds, throughput and p99 over time:
matplotlib, the ``bench`` extra, imported only here; without it the chart
is skipped and the summary says so) beside the fault suite's files
(``history.jsonl``, ``faults.jsonl``, ``summary.json``). Exit status 0
when every criterion passed, 1 otherwise (2: nothing failed but the
linearizability search was inconclusive).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.testing import faketime
from dkv.testing.code_version import code_version
from dkv.testing.fault_schedule import run_schedule
from dkv.testing.nemesis import SCHEDULES, FaultEvent, Nemesis, NemesisConfig
from dkv.testing.soak_chart import write_chart
from dkv.testing.soak_criteria import (
    Criterion,
    counts_text,
    db_criterion,
    explain,
    fds_criterion,
    history_criterion,
    log_criterion,
    rss_criterion,
    side_criterion,
)
from dkv.testing.soak_sampler import LogLine, Sampler, Tick
from dkv.testing.soak_side import LeaseChecker, WatchChecker
from dkv.testing.torture import TortureConfig, TortureResult, history_checks, write_files
from dkv.testing.workload import Workload, WorkloadConfig

__all__ = ["SoakConfig", "SoakResult", "main", "parse_duration", "run_soak"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hms]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``2h``, ``30m``, ``90s`` or ``90`` (seconds)."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError(f"a duration such as 2h, 30m or 90s, not {text!r}")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


@attrs.frozen(kw_only=True)
class SoakConfig:
    """One soak (see the module docstring); durations in seconds."""

    out: Path = attrs.field(converter=Path)
    duration: float
    fault_every: float = 60.0
    rss_warmup: float = 300.0
    rss_tolerance: float = 0.10
    sample_every: float = 5.0
    log_grace: float = 20.0
    tail: float | None = None
    nemesis: str = attrs.field(default="mix", validator=attrs.validators.in_(SCHEDULES))
    seed: int = 0
    nodes: int = 3
    clients: int = 4
    keys: int = 5
    auto_compaction_retention: str = "1m"
    #: The nodes' ``--idempotency-window`` (seconds): each write of the
    #: workload carries a fresh key, so the db holds a record per write of
    #: the last window; shorter than the warm-up, it is full before ``db-size``
    #: judges (dkv's default, 10 min, would still be filling).
    idempotency_window: float = 120.0
    request_timeout: float = 2.0
    #: The nodes' ``--peer-transport``; None: the fault run's default.
    peer_transport: str | None = None

    @property
    def healed_tail(self) -> float:
        return self.tail if self.tail is not None else min(30.0, max(5.0, self.duration / 8))

    def torture(self) -> TortureConfig:
        """The fault run inside: its workload, node settings and checks."""
        fault = (min(10.0, self.fault_every / 6), min(15.0, self.fault_every / 4))
        config = TortureConfig(
            out=self.out,
            nemesis=self.nemesis,
            time=self.duration,
            tail=self.healed_tail,
            warmup=min(self.fault_every / 2, 30.0),
            seed=self.seed,
            nodes=self.nodes,
            clients=self.clients,
            keys=self.keys,
            workload="mixed",
            request_timeout=self.request_timeout,
            check_timeout=60.0,
            nemesis_config=NemesisConfig(
                fault_seconds=fault,
                quiet_seconds=(max(0.0, self.fault_every - fault[1]), max(0.0, self.fault_every - fault[0])),
            ),
        )
        return config if self.peer_transport is None else attrs.evolve(config, peer_transport=self.peer_transport)

    def node_args(self) -> list[str]:
        """The nodes' arguments beyond the fault run's: periodic auto-compaction
        and the idempotency window, the two things that bound the db under a
        fixed key set."""
        return [
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", self.auto_compaction_retention,
            "--idempotency-window", f"{self.idempotency_window:g}",
        ]  # fmt: skip

    def command(self) -> str:
        """The command line that repeats this soak (as far as timing allows)."""
        args = [
            "python", "-m", "dkv.torture", "--soak", f"{self.duration:g}s", "--fault-every", f"{self.fault_every:g}s",
            "--rss-warmup", f"{self.rss_warmup:g}s", "--seed", str(self.seed),
        ]  # fmt: skip
        default = SoakConfig(out=self.out, duration=self.duration)
        for flag, name, unit in (
            ("--rss-tolerance", "rss_tolerance", ""),
            ("--sample-every", "sample_every", "s"),
            ("--log-grace", "log_grace", "s"),
            ("--tail", "tail", "s"),
            ("--nemesis", "nemesis", ""),
            ("--nodes", "nodes", ""),
            ("--clients", "clients", ""),
            ("--keys", "keys", ""),
            ("--auto-compaction-retention", "auto_compaction_retention", ""),
            ("--idempotency-window", "idempotency_window", "s"),
        ):
            value = getattr(self, name)
            if value != getattr(default, name):
                args += [flag, f"{value:g}{unit}" if isinstance(value, float) else str(value)]
        return shlex.join([*args, "--out", str(self.out)])


@attrs.frozen(kw_only=True)
class SoakResult:
    config: SoakConfig
    torture: TortureResult
    ticks: list[Tick]
    criteria: list[Criterion]
    log_lines: list[tuple[LogLine, FaultEvent | None]]
    side: dict[str, Any]
    chart: str
    errors: list[str]

    @property
    def exit_status(self) -> int:
        if self.errors or any(c.ok is False for c in self.criteria):
            return 1
        return self.torture.exit_status

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.exit_status == 0,
            "exit_status": self.exit_status,
            "command": self.config.command(),
            "config": {k: v if not isinstance(v, Path) else str(v) for k, v in attrs.asdict(self.config).items()},
            "criteria": [c.to_json() for c in self.criteria],
            "faults": self.torture.faults(),
            "operations_total": len(self.torture.requests),
            "side": self.side,
            "log_lines": [
                {
                    "node": line.node,
                    "seen_between": [round(line.since, 3), round(line.time, 3)],
                    "text": line.text,
                    "explained_by": None if fault is None else fault.to_json(),
                }
                for line, fault in self.log_lines
            ],
            "samples": [t.to_json() for t in self.ticks],
            "chart": self.chart,
            "errors": self.errors,
        }

    def render(self) -> str:
        cfg = self.config
        lines = [
            f"dkv soak: {cfg.duration:g}s, a fault about every {cfg.fault_every:g}s ({cfg.nemesis}, in turns), "
            f"seed {cfg.seed}, {cfg.nodes} nodes, {cfg.clients} clients on {cfg.keys} keys",
            f"operations: {len(self.torture.requests)}; faults: "
            + (", ".join(f"{a} {n}" for a, n in self.torture.faults().items()) or "(none)"),
            "",
            f"{'criterion':<10} {'verdict':<7} detail",
        ]
        for c in self.criteria:
            first, *rest = c.detail.splitlines() or [""]
            lines.append(f"{c.name:<10} {c.verdict:<7} {first}")
            lines += [f"{'':<18} {more}" for more in rest]
        lines += [f"{'run':<10} {'FAIL':<7} {e}" for e in self.errors]
        lines.append(f"chart: {self.chart}")
        verdict = {0: "PASS", 1: "FAIL", 2: "INCONCLUSIVE"}[self.exit_status]
        lines.append(f"result: {verdict}   output in {cfg.out}")
        return "\n".join(lines)


def run_soak(cfg: SoakConfig, progress: Callable[[str], None] = lambda s: None) -> SoakResult:
    """Run one soak and write its files into ``cfg.out``. Every process
    started is gone when this returns or raises."""
    tcfg = cfg.torture()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    seconds: dict[str, float] = {}
    started = time.monotonic()
    code = code_version()
    with tcfg.cluster(cfg.node_args()) as cluster:
        clocks = faketime.for_schedule(cluster, cfg.nemesis, out / "clocks")
        cluster.start()
        cluster.leader(timeout=30)
        seconds["start"] = time.monotonic() - started
        progress(
            f"cluster of {cfg.nodes} up in {cluster.dir}; soaking for {cfg.duration:g}s"
            + ("" if clocks is not None else " (no libfaketime: clock faults skipped)")
        )
        workload = Workload(
            cluster.rest_ports,
            WorkloadConfig(
                clients=cfg.clients,
                keys=cfg.keys,
                read_ratio=tcfg.read_ratio,
                serializable_ratio=tcfg.serializable_ratio,
                workload="mixed",
                cas_ratio=tcfg.cas_ratio,
                revision_read_ratio=tcfg.revision_read_ratio,
                compact_ratio=tcfg.compact_ratio,
                timeout=cluster.client_timeout,
                write_attempts=tcfg.write_attempts,
            ),
            seed=cfg.seed,
        )
        nemesis = Nemesis(
            cluster, cfg.nemesis, random.Random(f"{cfg.seed}/nemesis"), tcfg.nemesis_config, clocks=clocks, rotate=True
        )
        watch = WatchChecker(cluster, cfg.seed)
        leases = LeaseChecker(cluster, cfg.seed)
        sampler = Sampler(cluster, lambda: workload.requests, cfg.sample_every)
        t0 = time.monotonic()
        sampler.start()
        watch.start()
        leases.start()
        try:
            heal_time = run_schedule(workload, nemesis, tcfg, errors, progress)
        finally:
            leases.stop()
            watch.stop()
            sampler.stop()
        seconds["workload"] = time.monotonic() - t0
        requests = workload.requests
        progress(f"{len(requests)} operations, {len(sampler.ticks)} samples; checking")
        t1 = time.monotonic()
        checks, verdict = history_checks(cluster, tcfg, workload, requests, nemesis, heal_time)
        seconds["checks"] = time.monotonic() - t1
        events = nemesis.events
    seconds["total"] = time.monotonic() - started
    torture = TortureResult(
        config=tcfg,
        requests=requests,
        events=events,
        checks=checks,
        verdict=verdict,
        errors=list(errors),
        heal_time=heal_time,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        code=code,
        compactions=workload.compactions,
    )
    write_files(torture)
    for name, thread_error in (("sampler", sampler.error), ("watch", watch.error), ("leases", leases.error)):
        if thread_error is not None:
            errors.append(f"the {name} thread failed: {thread_error!r}")
    explained = explain(sampler.log_lines, events, cfg.log_grace)
    criteria = [
        history_criterion(torture),
        side_criterion("watch", watch.violations, f"{watch.events} events, " + counts_text(watch.counts)),
        side_criterion("leases", leases.violations, counts_text(leases.counts)),
        rss_criterion(sampler.ticks, cfg.rss_warmup, cfg.rss_tolerance),
        fds_criterion(sampler.ticks, cfg.rss_warmup, cfg.clients + 8),
        db_criterion(sampler.ticks, t0 + cfg.rss_warmup),
        log_criterion(explained),
    ]
    chart = write_chart(out / "soak.png", sampler.ticks, t0)
    result = SoakResult(
        config=cfg,
        torture=torture,
        ticks=sampler.ticks,
        criteria=criteria,
        log_lines=explained,
        side={"watch": dict(watch.counts), "leases": dict(leases.counts), "watch_events": watch.events},
        chart=chart,
        errors=errors,
    )
    with open(out / "soak.json", "w", encoding="utf-8") as f:
        json.dump(result.summary(), f, indent=1)
        f.write("\n")
    return result


# -- the command line -----------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: Sequence[str] | None = None) -> SoakConfig:
    p = argparse.ArgumentParser(
        prog="python -m dkv.torture --soak",
        description="Hours of mixed load with a fault every minute; then the fault checks and resource criteria.",
    )
    p.add_argument("--soak", type=_duration, required=True, metavar="DURATION", help="how long: 2h, 30m, 90s")
    p.add_argument("--fault-every", type=_duration, default=60.0, metavar="DURATION", help="default 60s")
    p.add_argument(
        "--rss-warmup", type=_duration, default=300.0, metavar="DURATION", help="RSS reference point; default 5m"
    )
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth, a fraction; default 0.10")
    p.add_argument("--sample-every", type=_duration, default=5.0, metavar="DURATION", help="default 5s")
    p.add_argument(
        "--log-grace", type=_duration, default=20.0, metavar="DURATION",
        help="how long after a fault is undone its warnings are explained by it; default 20s",
    )  # fmt: skip
    p.add_argument("--tail", type=_duration, default=None, metavar="DURATION", help="healed tail; default duration/8")
    p.add_argument("--nemesis", choices=SCHEDULES, default="mix", help="default mix: every fault in turns")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--keys", type=int, default=5)
    p.add_argument("--auto-compaction-retention", default="1m", help="the nodes' periodic retention; default 1m")
    p.add_argument(
        "--idempotency-window", type=_duration, default=120.0, metavar="DURATION",
        help="the nodes' --idempotency-window; default 2m (shorter than the warm-up: see db-size)",
    )  # fmt: skip
    p.add_argument("--peer-transport", choices=("grpc", "twisted"), default=None, help="the nodes' --peer-transport")
    p.add_argument("--out", required=True, help="directory for the summary, chart, history and node logs")
    a = p.parse_args(argv)
    if a.soak <= 0 or a.fault_every <= 0:
        p.error("--soak and --fault-every must be positive")
    cfg = SoakConfig(
        out=a.out, duration=a.soak, fault_every=a.fault_every, rss_warmup=a.rss_warmup, rss_tolerance=a.rss_tolerance,
        sample_every=a.sample_every, log_grace=a.log_grace, tail=a.tail, nemesis=a.nemesis, seed=a.seed,
        nodes=a.nodes, clients=a.clients, keys=a.keys, auto_compaction_retention=a.auto_compaction_retention,
        idempotency_window=a.idempotency_window, peer_transport=a.peer_transport,
    )  # fmt: skip
    if cfg.healed_tail >= cfg.duration:
        p.error("--tail must be shorter than --soak")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        result = run_soak(cfg, progress=lambda s: print(f"[soak] {s}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("[soak] interrupted; every node was stopped", file=sys.stderr)
        return 130
    print(result.render())
    return result.exit_status
