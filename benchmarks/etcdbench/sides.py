# test-case-name: tests.test_bench_scripts
"""dkv and etcd side by side for the gRPC benchmarks (watch_fanout.py,
lease_keepalive.py): their common command-line options, a fresh 3-member
cluster per system in turn (never both at once), the skip of a system
that does not serve a service, and the JSON file of the results."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from dkv.testing.poll import Timeout
from dkv.testing.process import close_all
from etcdbench.dkv_cluster import DkvCluster
from etcdbench.etcd import EtcdCluster
from etcdbench.grpc_streams import NotServed
from etcdbench.machine import machine_info
from etcdbench.runs import SYSTEMS, BenchCluster

#: benchmarks/, where results go by default.
BENCHMARKS = Path(__file__).resolve().parents[1]

#: What a measure returns for one system: one row per configuration.
Measure = Callable[[BenchCluster, str, argparse.Namespace], list[dict[str, Any]]]


def add_common_arguments(ap: argparse.ArgumentParser) -> None:
    """--systems, --target, --etcd, --tmp-dir, --out."""
    ap.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated, measured in this order (default dkv,etcd)"
    )
    ap.add_argument("--target", choices=("leader", "follower"), default="leader", help="the member the clients talk to")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="etcd binary")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where the clusters' data go (default: system temp)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON file (default benchmarks/results/NAME.json)")


def parse_systems(text: str) -> list[str]:
    """The systems a --systems value names, in its order; ValueError on an
    unknown one or none."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise ValueError(f"--systems takes a comma-separated list of {', '.join(SYSTEMS)}, not {text!r}")
    return list(dict.fromkeys(names))


def open_cluster(system: str, args: argparse.Namespace) -> BenchCluster:
    """A new (not yet started) 3-member cluster of system."""
    return EtcdCluster(args.etcd, args.tmp_dir) if system == "etcd" else DkvCluster(args.tmp_dir)


def each_system(args: argparse.Namespace, measure: Measure) -> list[dict[str, Any]]:
    """For each of args.systems in turn: start a fresh cluster, measure it
    and stop it. A system that does not serve the service (NotServed) gets
    one row ``{"system", "skipped"}`` and a line saying so."""
    rows: list[dict[str, Any]] = []
    for system in args.systems:
        with open_cluster(system, args) as cluster:
            cluster.start()
            try:
                found = measure(cluster, system, args)
            except NotServed as e:
                print(f"{system}: skipped: {e}", flush=True)
                rows.append({"system": system, "skipped": str(e)})
                continue
            rows.extend(found)
    return rows


def run_main(
    name: str, args: argparse.Namespace, measure: Measure, table: Callable[[list[dict[str, Any]]], str]
) -> int:
    """Measure every system, print the table, write the JSON (the machine,
    the configuration, the rows). 0 on success, 1 on a failure, 130 on
    Ctrl-C; every process started is killed in any case."""
    report: dict[str, Any] = {
        "machine": machine_info(args.etcd if "etcd" in args.systems else None, None, args.tmp_dir),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    status = 0
    rows: list[dict[str, Any]] = []
    try:
        rows = each_system(args, measure)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        status = 130
    except (RuntimeError, OSError, Timeout, grpc.RpcError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        report["failure"] = str(e)
        status = 1
    finally:
        close_all()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["rows"] = rows
    if rows:
        print()
        print(table(rows))
        start, end = report["machine"]["loadavg_start"], report["machine"]["loadavg_end"]
        print(f"\nload average (1 min) {start[0]:.2f} at the start, {end[0]:.2f} at the end; {os.cpu_count()} CPUs")
    out = args.out or BENCHMARKS / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return status


def check_systems(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Replace args.systems by its list, or exit 2 with the parser's error."""
    try:
        args.systems = parse_systems(args.systems)
    except ValueError as e:
        ap.error(str(e))
