# test-case-name: tests.test_scaling_script
"""The scaling picture: how dkv's and etcd's costs grow, one parameter at a time.

    python benchmarks/scaling.py                               # every section (about 10 min on 2 cores)
    python benchmarks/scaling.py --sections size,conns         # some of them
    python benchmarks/scaling.py --quick                       # a smoke version (a few minutes)
    python benchmarks/scaling.py --sections keys --key-counts 10000,1000000,5000000

Sections (``--sections``, comma-separated; default all):

  size      3, 5 and 7 members (--sizes): writes and linearizable reads at 64
            connections to the leader (--size-connections), dkv vs etcd
  value     values of 256 B, 4 KiB, 64 KiB and 1 MiB (--value-sizes): writes and
            reads at 16 connections (--value-connections), req/s and MiB/s. Both
            systems refuse requests over 1.5 MiB by default (dkv's body limit,
            etcd's --max-request-bytes), so a value's JSON put must fit in it;
            fewer read keys are written for big values (--value-read-mib)
  keys      10k, 100k and 1M keys (--key-counts; 5M takes about 18 minutes
            here, so it is not a default; each count's cluster gets a space
            quota that holds its keys): dkv only, the scale figures of
            vs_etcd.py --scale at each count: write rate while loading, RSS per
            node (anonymous and file-mapped), db size, a follower's restart
            (kill -9) to serving and caught up, a new member's catch-up by snapshot
  conns     1, 4, 16, 64, 256 and 1,024 connections (--connections): writes and
            reads (--conns-ops), throughput and p99, where each system saturates
  catchup   under writes at 16 connections, a follower paused (SIGSTOP) for 5 s
            (--catchup-pause) then resumed: the time until it has applied what
            the leader had committed when it resumed, while the cluster keeps
            serving, and the leader's RSS meanwhile (sampled every 0.2 s)

Every run uses vs_etcd.py's clusters and wrk load (``load.lua``), a fresh
cluster per system (never both at once), 8-byte keys and 256-byte values
unless the section varies them, through etcd's gateway paths on both
systems (--api v3; --api v0: each system's own API). Each section prints a
one-line statement of how its cost grows: the slope of the cost (time per
request = 1/throughput, or the figure itself) against the parameter on a
log-log scale, named flat (|slope| < 0.15), sub-linear, linear (0.85 to
1.15), super-linear or falling.

``--quick`` shrinks every section (3 and 5 members, two value sizes, 2,000
and 12,000 keys, 1 and 16 connections, 1-second runs, a 2-second pause)
unless a flag says otherwise. Results go to --out (default
benchmarks/results/scaling/): scaling.json (every point, the statements, the
machine) and SECTION.png per section (matplotlib: pip install '.[bench]').
A 429 answer (a server shedding load: "too many requests", which dkv's
admission control and etcd answer past their limits, e.g. at 1,024
connections) is counted apart as rejected, not as an error.
Exit status: 0; 1 if a run had errors (non-2xx other than 429, socket errors, wrong reads)
or a section failed; 2 when etcd or wrk is missing; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dkv.config import DEFAULT_PEER_TRANSPORT
from dkv.testing.poll import Timeout
from dkv.testing.process import close_all
from etcdbench.machine import machine_info
from etcdbench.scaling import REQUEST_LIMIT, RUNNERS, SECTIONS, has_errors, put_body_bytes
from etcdbench.scaling_chart import write_section_chart
from etcdbench.sides import parse_systems

BENCHMARKS = Path(__file__).resolve().parents[1]

#: Defaults of the knobs --quick changes: (full, quick).
SIZED: dict[str, tuple[Any, Any]] = {
    "sizes": ([3, 5, 7], [3, 5]),
    "value_sizes": ([256, 4096, 65536, 1048576], [256, 65536]),
    "key_counts": ([10_000, 100_000, 1_000_000], [2_000, 12_000]),
    "connections": ([1, 4, 16, 64, 256, 1024], [1, 16]),
    "duration": (5, 1),
    "warmup": (1, 0),
    "catchup_pause": (5.0, 2.0),
    "read_keys": (1000, 100),
}


def _ints(text: str) -> list[int]:
    try:
        values = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of positive numbers, not {text!r}")
    return values


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; not {text!r}")
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; --quick fills in the knobs not given."""
    ap = argparse.ArgumentParser(
        prog="scaling.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sections", type=_sections, default=list(SECTIONS), help=f"default {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="a smoke version of every section")
    ap.add_argument("--systems", default="dkv,etcd", help="comma-separated (default dkv,etcd; keys is dkv only)")
    ap.add_argument("--api", choices=("v3", "v0"), default="v3", help="v3: etcd's paths on both (default); v0: own")
    ap.add_argument("--sizes", type=_ints, help="members (default 3,5,7; quick 3,5)")
    ap.add_argument("--size-connections", type=int, default=64, help="connections of the size runs (default 64)")
    ap.add_argument("--value-sizes", type=_ints, help="value bytes (default 256,4096,65536,1048576)")
    ap.add_argument("--value-connections", type=int, default=16, help="connections of the value runs (default 16)")
    ap.add_argument("--value-read-mib", type=int, default=64, help="MiB of read keys per value size at most (64)")
    ap.add_argument("--key-counts", type=_ints, help="keys (default 10000,100000,1000000; quick 2000,12000)")
    ap.add_argument("--scale-connections", type=int, default=64, help="connections loading the keys (default 64)")
    ap.add_argument("--scale-timeout", type=int, default=3600, help="seconds allowed to load the keys (3600)")
    ap.add_argument("--scale-wait", type=int, default=900, help="seconds allowed for a restart or catch-up (900)")
    ap.add_argument("--connections", type=_ints, help="connections (default 1,4,16,64,256,1024; quick 1,16)")
    ap.add_argument("--conns-ops", default="write,read", help="operations of the conns section (default write,read)")
    ap.add_argument("--catchup-pause", type=float, help="seconds the follower is paused (default 5; quick 2)")
    ap.add_argument("--catchup-before", type=float, default=2.0, help="seconds of load before the pause (default 2)")
    ap.add_argument("--catchup-connections", type=int, default=16, help="write connections meanwhile (default 16)")
    ap.add_argument("--catchup-timeout", type=float, default=120.0, help="seconds allowed to catch up (default 120)")
    ap.add_argument("--sample-interval", type=float, default=0.2, help="seconds between samples (default 0.2)")
    ap.add_argument("--duration", type=int, help="seconds measured per run (default 5; quick 1)")
    ap.add_argument("--warmup", type=int, help="seconds of warm-up per run (default 1; quick 0)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the size, value and conns runs (medians)")
    ap.add_argument("--read-keys", type=int, help="keys written before read runs (default 1000; quick 100)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads per wrk process (default 2)")
    ap.add_argument("--wrk-timeout", type=int, default=10, help="wrk's per-request timeout, seconds (default 10)")
    ap.add_argument(
        "--peer-transport",
        choices=("grpc", "twisted"),
        default=DEFAULT_PEER_TRANSPORT,
        help=f"dkv's --peer-transport (default {DEFAULT_PEER_TRANSPORT})",
    )
    ap.add_argument("--out", type=Path, default=BENCHMARKS / "results" / "scaling", help="output directory")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where the clusters' data go (default: system temp)")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "etcd", help="etcd binary")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    args = ap.parse_args(argv)
    for name, (full, quick) in SIZED.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        args.systems = parse_systems(args.systems)
    except ValueError as e:
        ap.error(str(e))
    args.conns_ops = [op.strip() for op in args.conns_ops.split(",") if op.strip()]
    if not args.conns_ops or set(args.conns_ops) - {"write", "read"}:
        ap.error("--conns-ops takes write, read or both")
    too_big = [v for v in args.value_sizes if put_body_bytes(v) > REQUEST_LIMIT]
    if too_big:
        ap.error(f"--value-sizes {too_big}: a put's JSON would pass the 1.5 MiB request limit of dkv and etcd")
    positive = (args.duration, args.rounds, args.threads, args.read_keys, args.catchup_connections)
    if min(positive) < 1 or args.warmup < 0 or args.catchup_pause <= 0 or args.sample_interval <= 0:
        ap.error("--duration, --rounds, --threads, --read-keys and the catch-up settings must be positive")
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The binaries that are not there (etcd only when it is measured)."""
    tools = [("wrk", args.wrk)] + ([("etcd", args.etcd)] if "etcd" in args.systems else [])
    return [name for name, path in tools if shutil.which(path) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections; see the module's docstring for the exit status."""
    args = parse_args(argv)
    missing = missing_tools(args)
    if missing:
        print(f"scaling: {' and '.join(missing)} not found (apt-get install etcd-server wrk)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(args.etcd if "etcd" in args.systems else None, args.wrk, args.tmp_dir),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": {},
    }
    json_path = args.out / "scaling.json"
    status = 0
    statements = []
    try:
        for section in args.sections:
            print(f"== {section}", flush=True)
            started = time.monotonic()
            try:
                result = RUNNERS[section](args)
            except (RuntimeError, ValueError, OSError, Timeout) as e:
                print(f"scaling: {section} failed: {e}", file=sys.stderr, flush=True)
                report["sections"][section] = {"error": str(e)}
                status = 1
                continue
            finally:
                close_all()
            result["seconds"] = time.monotonic() - started
            report["sections"][section] = result
            statements.append(result["statement"])
            print(result["statement"], flush=True)
            if has_errors(result):
                print(f"scaling: {section} had runs with errors", file=sys.stderr)
                status = 1
            png = args.out / f"{section}.png"
            if write_section_chart(section, result, png):
                print(f"wrote {png}", flush=True)
            json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        report["interrupted"] = True
        status = 130
    finally:
        close_all()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if statements:
        print("\n" + "\n".join(statements))
    print(f"wrote {json_path}")
    return status
