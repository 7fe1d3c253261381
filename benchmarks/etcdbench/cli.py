# test-case-name: tests.test_vs_etcd_script
"""dkv against etcd on the same machine, with the same load generator.

    python benchmarks/vs_etcd.py                       # the target runs, 3 rounds, the target table
    python benchmarks/vs_etcd.py --runs all --duration 10 --rounds 2
    python benchmarks/vs_etcd.py --scale 1000000       # ... and the scale figures at 1M keys
    python benchmarks/vs_etcd.py --skip-compare --scale 200000

Needs the etcd and wrk binaries (``apt-get install etcd-server wrk``) and,
for the chart only, matplotlib (``pip install '.[bench]'``).

Comparison. For each round and each system in turn (dkv, etcd, dkv, etcd,
...: machine drift hits both), a fresh 3-member cluster is started on free
loopback ports in a temporary directory, the keys the runs read are written,
then every run is measured with wrk (2 threads, the Lua script
``etcdbench/load.lua`` beside this file) after a short warm-up that is not
counted; then the cluster is stopped and its data removed. The two systems
never run at the same time. Runs (``--runs``: names and the groups ``v0``,
``v3``, ``targets`` and ``all``, comma-separated; default ``targets``:
write-1/16/64, read-1/16/64 and their v3- twins, the runs issue 16's
targets are judged on):

  v0: each system through its own API (issue 6's comparison): dkv through
  ``POST /v0/kv`` and ``GET /v0/kv/key/{b64}``, etcd through its JSON
  gateway ``POST /v3/kv/put`` and ``POST /v3/kv/range``

    write-1, write-16, write-64   puts of new unique keys to the leader, 1/16/64 connections
    read-1, read-16, read-64      linearizable reads of prepopulated keys from the leader
    write-64-all                  puts over 64 connections split across all 3 members
                                  (3 wrk processes at once; throughputs add up, latency
                                  is the worst p50/p99 of the three)

  v3: both systems through etcd's gateway paths, byte-identical requests

    v3-write-1, -16, -64          POST /v3/kv/put of new unique keys
    v3-read-1, -16, -64           POST /v3/kv/range of one prepopulated key (linearizable)
    v3-range100-16, -64           POST /v3/kv/range over a prefix of 100 keys
                                  (--range-prefixes prefixes written beforehand)
    v3-cas-16, -64                POST /v3/kv/txn: compare-and-swap on the key's
                                  mod_revision, put on success (see load.lua);
                                  succeeded and failed CAS are counted apart

A system whose leader does not answer ``POST /v3/kv/range`` with a 200 (dkv
before it serves etcd's API) skips its v3 runs, saying so; the other system
runs them all the same. Keys are 8 bytes, values 256 bytes (options). The
read keys are written through each system's own API (dkv's through /v0,
which shares one keyspace with /v3), the range keys with one v3 txn per
prefix.
Each figure is the median over rounds; the spread is (max - min) / median.
Every run also counts the CPU time (/proc/PID/stat) all members used while
it was measured, per 10,000 answered requests.

Targets. After the table comes the TARGET TABLE, issue 16's targets with
PASS/FAIL (n/a when a run was not measured on both systems or had errors):
dkv/etcd >= 1.0x for writes and reads at 1, 16 and 64 connections (v0 and
v3 runs); >= 1.5x for writes and >= 2x for reads at 64; p99 <= etcd's at 16
and 64; CPU per request <= 1.5x etcd's. A FAILed target does not change
the exit status; the JSON carries the verdicts (``targets``).
Any non-2xx answer, socket error, read that found nothing, range short of
its 100 keys or txn answer without the key's revision makes the run fail
(a failed CAS does not): the table is printed, then the script exits 1.

Scale (``--scale N``; off unless N is given). N unique keys are written into a
fresh 3-node dkv cluster with wrk (64 connections to the leader), then it
reports the resident memory of every node, how long a killed follower takes
to be back and caught up, and how long a new (4th) node joining with an
empty db takes to catch up by snapshot.

Results go to ``--out`` (default ``benchmarks/results/``): ``vs_etcd.json``
(every raw wrk result, the summary, the scale figures and machine
information) and ``vs_etcd.png`` (throughput and p99 per run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dkv.config import DEFAULT_PEER_TRANSPORT, PEER_TRANSPORTS
from dkv.testing.poll import Timeout
from dkv.testing.process import close_all
from etcdbench.dkv_cluster import DkvCluster
from etcdbench.etcd import EtcdCluster
from etcdbench.load import Tags, measure, prepopulate, prepopulate_ranges, run_has_errors, v3_probe
from etcdbench.machine import machine_info
from etcdbench.report import CHART_HINT, format_result, format_table, have_matplotlib, summarize, write_chart
from etcdbench.runs import GROUPS, RANGE_KEYS, RUNS, SYSTEMS, BenchCluster, RunSpec, needs_v3, select_runs
from etcdbench.scale import format_scale, scale_phase
from etcdbench.targets import counts, evaluate, format_targets

#: benchmarks/, where results go by default.
BENCHMARKS = Path(__file__).resolve().parents[1]
TOOLS_HINT = "apt-get install etcd-server wrk"


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like on Ctrl-C."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds measured per run (default 3)")
    ap.add_argument(
        "--warmup", type=int, default=1, help="seconds of warm-up before each run, not counted (default 1; 0: none)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds; each runs dkv then etcd on fresh clusters (default 3)"
    )
    ap.add_argument(
        "--runs",
        default="targets",
        help=f"comma-separated runs and groups ({', '.join(GROUPS)}); default targets. Runs: "
        + ", ".join(r.name for r in RUNS),
    )
    ap.add_argument("--threads", type=int, default=2, help="wrk threads per wrk process (default 2)")
    ap.add_argument("--key-size", type=int, default=8, help="key bytes (default 8, at least 6)")
    ap.add_argument("--value-size", type=int, default=256, help="value bytes (default 256)")
    ap.add_argument("--read-keys", type=int, default=1000, help="keys written before the read runs (default 1000)")
    ap.add_argument(
        "--range-prefixes",
        type=int,
        default=100,
        help=f"prefixes of {RANGE_KEYS} keys written before the range runs (default 100)",
    )
    ap.add_argument("--wrk-timeout", type=int, default=10, help="wrk's per-request timeout in seconds (default 10)")
    ap.add_argument(
        "--scale", type=int, default=0, help="keys for the scale figures; 0 (the default): no scale figures"
    )
    ap.add_argument("--scale-connections", type=int, default=64, help="connections loading the scale keys (default 64)")
    ap.add_argument(
        "--scale-timeout", type=int, default=3600, help="seconds allowed for loading the scale keys (default 3600)"
    )
    ap.add_argument(
        "--scale-wait", type=int, default=900, help="seconds allowed for a restart or a catch-up (default 900)"
    )
    ap.add_argument(
        "--peer-transport",
        choices=PEER_TRANSPORTS,
        default=DEFAULT_PEER_TRANSPORT,
        help=f"dkv's --peer-transport (default {DEFAULT_PEER_TRANSPORT})",
    )
    ap.add_argument("--skip-scale", action="store_true", help="no scale figures, even with --scale")
    ap.add_argument("--skip-compare", action="store_true", help="only the scale figures (needs --scale)")
    ap.add_argument(
        "--out", type=Path, default=BENCHMARKS / "results", help="output directory (default benchmarks/results/)"
    )
    ap.add_argument(
        "--tmp-dir", type=Path, default=None, help="where the clusters' data go (default: the system temp dir)"
    )
    ap.add_argument("--etcd", default=shutil.which("etcd") or "etcd", help="etcd binary")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    args = ap.parse_args(argv)
    try:
        args.run_specs = select_runs(args.runs)
    except ValueError as e:
        ap.error(str(e))
    if args.key_size < 6:
        ap.error("--key-size must be at least 6 (tag, thread and a 4-byte counter)")
    if min(args.duration, args.rounds, args.threads, args.value_size, args.read_keys) < 1 or args.scale < 0:
        ap.error("--duration, --rounds, --threads, --value-size and --read-keys must be positive, --scale not negative")
    if not 1 <= args.range_prefixes <= 256 ** (args.key_size - 3):
        ap.error(f"--range-prefixes must be between 1 and {256 ** (args.key_size - 3)} (with this --key-size)")
    if args.skip_scale:
        args.scale = 0
    if args.skip_compare and not args.scale:
        ap.error("--skip-compare without --scale N leaves nothing to do")
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The binaries that are not there."""
    return [name for name, path in (("etcd", args.etcd), ("wrk", args.wrk)) if shutil.which(path) is None]


def runnable(cluster: BenchCluster, specs: Sequence[RunSpec]) -> tuple[list[RunSpec], str | None]:
    """The runs this started cluster can serve, and why the others (its v3
    runs, when its leader does not serve etcd's gateway) cannot, or None."""
    if not needs_v3(specs):
        return list(specs), None
    why = v3_probe(cluster.leader_url())
    if why is None:
        return list(specs), None
    return [s for s in specs if s.api != "v3"], why


def prepare(cluster: BenchCluster, specs: Sequence[RunSpec], args: argparse.Namespace) -> dict[str, float]:
    """Write what the runs read: the read keys (through the system's own
    API, as issue 6's comparison always did) and, for range runs, the
    range prefixes. Seconds each took."""
    took = {"prepopulate_s": prepopulate(cluster, args.read_keys, args.key_size, args.value_size)}
    if any(s.op == "range" for s in specs):
        took["prepopulate_range_s"] = prepopulate_ranges(cluster, args.range_prefixes, args.key_size, args.value_size)
    return took


def compare(args: argparse.Namespace, results: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> None:
    """Every round: each system on a fresh cluster, every run it serves;
    appends to results (and to skipped, the runs a system could not serve)
    as it goes, so an interrupted run keeps what it measured."""
    for rnd in range(1, args.rounds + 1):
        for system in SYSTEMS:
            cluster: BenchCluster = (
                EtcdCluster(args.etcd, args.tmp_dir)
                if system == "etcd"
                else DkvCluster(args.tmp_dir, args.peer_transport)
            )
            with cluster:
                cluster.start()
                specs, why = runnable(cluster, args.run_specs)
                if why is not None:
                    names = [s.name for s in args.run_specs if s not in specs]
                    skipped.extend({"run": n, "system": system, "round": rnd, "reason": why} for n in names)
                    print(f"round {rnd} {system:4} skips its v3 runs: {why}", flush=True)
                if not specs:
                    continue
                prep = prepare(cluster, specs, args)
                tags = Tags()
                for spec in specs:
                    r = measure(cluster, spec, args, tags)
                    r["round"] = rnd
                    r.update(prep)
                    results.append(r)
                    print(f"round {rnd} {system:4} {spec.name:14} {format_result(r)}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run was clean, 1 when one had errors,
    2 when a tool is missing, 130 on Ctrl-C. The targets' verdicts do not
    change it."""
    args = parse_args(argv)
    missing = missing_tools(args)
    if missing:
        print(
            f"vs_etcd: {' and '.join(missing)} not found. Install them with:\n    {TOOLS_HINT}\n"
            "(or give their paths with --etcd / --wrk)",
            file=sys.stderr,
        )
        return 2
    if not have_matplotlib():
        print(f"note: matplotlib is not installed, so no chart; for it: {CHART_HINT}", flush=True)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(args.etcd, args.wrk, args.tmp_dir),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run_specs"},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    status = 0
    try:
        if not args.skip_compare:
            compare(args, results, skipped)
        if args.scale:
            report["scale"] = scale_phase(args)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; stopping everything", file=sys.stderr)
        report["interrupted"] = True
        status = 130
    except (RuntimeError, ValueError, OSError, Timeout) as e:
        print(f"vs_etcd: {e}", file=sys.stderr)
        report["failure"] = str(e)
        status = 1
    finally:
        close_all()  # nothing should be left; whatever is goes now

    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["results"] = results
    report["skipped"] = skipped
    rows = summarize(results, args.run_specs, skipped) if results or skipped else []
    report["summary"] = rows
    bad = [f"{r['system']} {r['run']} round {r['round']}" for r in results if run_has_errors(r)]
    report["runs_with_errors"] = bad
    # Only the targets on the runs chosen (all of them with the default --runs).
    verdicts = [v for v in evaluate(rows) if v["run"] in {r["run"] for r in rows}] if rows else []
    report["targets"] = verdicts
    report["target_counts"] = counts(verdicts)
    if rows:
        print()
        print(format_table(rows))
        print()
        print(format_targets(verdicts, min((r[s]["rounds"] for r in rows for s in SYSTEMS if r[s]), default=None)))
        if len(verdicts) < len(evaluate([])):
            print("(only the targets on the runs chosen; the default --runs judges every target)")
    if "scale" in report:
        print()
        print(format_scale(report["scale"]))
        if "error" in report["scale"]:
            status = status or 1
    json_path = args.out / "vs_etcd.json"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwrote {json_path}")
    if rows:
        png = args.out / "vs_etcd.png"
        if write_chart(rows, png):
            print(f"wrote {png}")
        else:
            print(f"no chart: matplotlib is not installed ({CHART_HINT})")
    if bad:
        print(f"FAILED: runs with errors (non-2xx, socket errors or wrong reads): {', '.join(bad)}", file=sys.stderr)
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
