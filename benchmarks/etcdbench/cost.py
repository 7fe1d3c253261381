# test-case-name: tests.test_vs_etcd_script
"""What one write costs a dkv cluster: CPU and bytes on disk
(``python benchmarks/write_cost.py``; its help is this docstring).

    python benchmarks/write_cost.py                    # 5,000 writes through POST /v0/kv
    python benchmarks/write_cost.py --api v3           # through POST /v3/kv/put (once dkv serves it)
    python benchmarks/write_cost.py --writes 20000 --connections 64
    python benchmarks/write_cost.py --idempotency      # without, then with an Idempotency-Key per write

It starts a fresh 3-node dkv cluster as a user runs one (the node's default
settings, launched by ``dkv.testing.cluster``; three nodes because that is
what the vs_etcd comparison measures: the leader's CPU includes replicating
to two followers, and "all members" is the cluster's whole cost), writes
``--warmup`` keys that are not counted, then ``--writes`` new keys (8-byte
keys, 256-byte values, as vs_etcd) to the leader over ``--connections``
keep-alive connections from this process, and waits until every member has
applied them and its db has stopped changing. It reports per write:

* µs of the leader's CPU, and of all members' together (user + system time
  from ``/proc/PID/stat``, before and after; the client is not counted; the
  members' idle CPU over the same time is measured beforehand and reported
  apart, not subtracted);
* bytes on disk: the growth of the LMDB pages in use in each member's db
  (the pages of every named database, its main database and the two meta
  pages, as ``mdb_stat`` counts them), per named database, and the growth
  of the file's high-water mark (``last_pgno``). Not the file's size: LMDB
  files are sparse and pages freed by log compaction are reused. The
  named databases are whatever the db holds, so the figures stay
  comparable when the store's layout changes (before and after the MVCC
  store: run it on both commits, through ``/v0`` and through ``/v3``).

``--idempotency`` measures twice, each time on a fresh cluster: first
without, then with an ``Idempotency-Key`` header on every write (a fresh
uuid4 each, warm-up included: the exactly-once writes of issue 13), and
reports both and the difference per write: µs of the leader's CPU and of
all members', and bytes on disk (pages in use, the high-water mark and
each named database, on the leader). The CPU figures move with the
machine's load by tens of µs between runs, the disk figures hardly:
``--rounds N`` repeats the pair N times (without, with, without, ...) and
reports the median of each difference and its range.

With the default 5,000 writes no log compaction happens (the node compacts
every 10,000 entries), so the ``log`` database's growth is the Raft log's
cost per write; a run that crosses a compaction says so.

The table goes to stdout, the figures as JSON to ``--out`` (default
``benchmarks/results/write_cost-API-COMMIT.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb

from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import close_all
from etcdbench.dkv_cluster import DkvCluster
from etcdbench.load import key_bytes, put_request, send_all, v3_probe
from etcdbench.machine import machine_info
from etcdbench.procstat import cpu_seconds

#: benchmarks/, where results go by default.
BENCHMARKS = Path(__file__).resolve().parents[1]
#: Key tags (first key byte) of the warm-up and the measured writes.
_WARMUP_TAG, _MEASURED_TAG = 1, 2


class NotServed(RuntimeError):
    """dkv does not serve the API asked for."""


def lmdb_usage(path: Path) -> dict[str, Any]:
    """The pages of the LMDB file at path, as ``mdb_stat -a`` counts them:
    ``psize``; ``last_pgno`` (the file's high-water mark); ``dbs``, per named
    database its ``pages`` (branch + leaf + overflow) and ``entries``;
    ``used_pages``, every named database's pages plus the main database's
    and the two meta pages. Opens the environment read-only, so a node may
    be writing it meanwhile."""
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=True, max_dbs=128)
    try:
        with env.begin() as txn:
            main = env.stat()
            names = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
            dbs = {}
            for name in names:
                try:
                    db = env.open_db(name, txn=txn, create=False)
                except lmdb.Error:  # a plain key of the main database, not a named one
                    continue
                dbs[name.decode(errors="replace")] = _pages(txn.stat(db))
        info = env.info()
    finally:
        env.close()
    used = 2 + _pages(main)["pages"] + sum(d["pages"] for d in dbs.values())
    return {"psize": main["psize"], "last_pgno": info["last_pgno"], "used_pages": used, "dbs": dbs}


def _pages(stat: Mapping[str, Any]) -> dict[str, int]:
    return {
        "pages": stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"],
        "entries": stat["entries"],
    }


def growth_per_write(before: Mapping[str, Any], after: Mapping[str, Any], writes: int) -> dict[str, Any]:
    """Bytes per write between two ``lmdb_usage`` results: ``used`` (pages in
    use), ``high_water`` (last_pgno) and, per named database, ``bytes`` and
    ``entries`` (a database that appeared counts from zero)."""
    psize = after["psize"]
    empty = {"pages": 0, "entries": 0}
    dbs = {}
    for name in sorted(set(before["dbs"]) | set(after["dbs"])):
        b, a = before["dbs"].get(name, empty), after["dbs"].get(name, empty)
        dbs[name] = {
            "bytes": (a["pages"] - b["pages"]) * psize / writes,
            "entries": (a["entries"] - b["entries"]) / writes,
        }
    return {
        "used": (after["used_pages"] - before["used_pages"]) * psize / writes,
        "high_water": (after["last_pgno"] - before["last_pgno"]) * psize / writes,
        "dbs": dbs,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="write_cost.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--api", choices=("v0", "v3"), default="v0", help="POST /v0/kv or POST /v3/kv/put (default v0)")
    ap.add_argument("--writes", type=int, default=5000, help="writes measured (default 5000)")
    ap.add_argument("--warmup", type=int, default=500, help="writes before, not counted (default 500; 0: none)")
    ap.add_argument("--connections", type=int, default=16, help="client connections to the leader (default 16)")
    ap.add_argument("--key-size", type=int, default=8, help="key bytes (default 8, at least 6)")
    ap.add_argument("--value-size", type=int, default=256, help="value bytes (default 256)")
    ap.add_argument("--idle", type=float, default=1.0, help="seconds of idle CPU measured first (default 1; 0: none)")
    ap.add_argument(
        "--idempotency",
        action="store_true",
        help="measure without, then with an Idempotency-Key header per write, and report the difference",
    )
    ap.add_argument("--rounds", type=int, default=1, help="with --idempotency: pairs of runs (default 1)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON file (default benchmarks/results/write_cost-...)")
    ap.add_argument(
        "--tmp-dir", type=Path, default=None, help="where the cluster's data go (default: the system temp dir)"
    )
    args = ap.parse_args(argv)
    if args.key_size < 6:
        ap.error("--key-size must be at least 6 (tag, thread and a 4-byte counter)")
    if min(args.writes, args.connections, args.value_size, args.rounds) < 1 or min(args.warmup, args.idle) < 0:
        ap.error(
            "--writes, --connections, --value-size and --rounds must be positive, --warmup and --idle not negative"
        )
    return args


def default_out(api: str, commit: str, modified: bool, idempotency: bool = False) -> Path:
    """benchmarks/results/write_cost-API-COMMIT[-modified][-idempotency].json"""
    tail = ("-modified" if modified else "") + ("-idempotency" if idempotency else "")
    return BENCHMARKS / "results" / f"write_cost-{api}-{commit[:10] or 'unknown'}{tail}.json"


def idempotency_key() -> dict[str, str]:
    """The header of one write with an idempotency key: a fresh uuid4."""
    return {"Idempotency-Key": str(uuid.uuid4())}


def _writes(api: str, tag: int, n: int, key_size: int, value: bytes) -> list[tuple[str, str, bytes]]:
    return [put_request(api, key_bytes(tag, 0, i, key_size), value) for i in range(n)]


def _settled(c: DkvCluster, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Wait until every member has applied the leader's commit index and
    its db's page counts hold still for a moment; their usage."""
    leader = c.leader()
    commit = (c.status(leader) or {}).get("commit_index", 0)
    for node in c.voters:
        c.nodes.wait_applied(node, commit, timeout)
    last: dict[str, dict[str, Any]] = {}

    def still() -> bool:
        nonlocal last
        now = {n: lmdb_usage(c.dir / f"{n}.db") for n in c.voters}
        same, last = now == last, now
        return same

    wait_until(still, timeout, "the members' dbs to hold still", 0.3)
    return last


def measure_cost(args: argparse.Namespace, idempotency: bool = False) -> dict[str, Any]:
    """Start the cluster, write (each write with an Idempotency-Key header
    if idempotency), and return the figures (raw counts and per write).
    NotServed when dkv does not serve the chosen API."""
    value = os.urandom(args.value_size)
    headers = idempotency_key if idempotency else None
    with DkvCluster(args.tmp_dir) as c:
        c.start()
        leader = c.leader()
        url = c.leader_url()
        if args.api == "v3":
            why = v3_probe(url)
            if why is not None:
                raise NotServed(f"dkv does not serve etcd's API: {why}")
        if args.warmup:
            warmup = _writes(args.api, _WARMUP_TAG, args.warmup, args.key_size, value)
            send_all(url, warmup, "the warm-up", args.connections, headers)
        _settled(c)
        pids = {n: c.pid(n) for n in c.voters}
        idle_cpu = {n: cpu_seconds(p) for n, p in pids.items()}
        time.sleep(args.idle)
        idle = {n: (cpu_seconds(p) - idle_cpu[n]) / args.idle if args.idle else 0.0 for n, p in pids.items()}

        writes = _writes(args.api, _MEASURED_TAG, args.writes, args.key_size, value)
        status_before = {n: c.status(n) or {} for n in c.voters}
        disk_before = {n: lmdb_usage(c.dir / f"{n}.db") for n in c.voters}
        cpu_before = {n: cpu_seconds(p) for n, p in pids.items()}
        start = time.monotonic()
        client_s = send_all(url, writes, "writing", args.connections, headers)
        disk_after = _settled(c)
        cpu_after = {n: cpu_seconds(p) for n, p in pids.items()}
        window = time.monotonic() - start
        status_after = {n: c.status(n) or {} for n in c.voters}
        leader_after = c.leader()

    n = args.writes
    cpu = {x: cpu_after[x] - cpu_before[x] for x in pids}
    return {
        "api": args.api,
        "idempotency_key": idempotency,
        "path": put_request(args.api, b"", b"")[1],
        "writes": n,
        "connections": args.connections,
        "key_size": args.key_size,
        "value_size": args.value_size,
        "nodes": list(pids),
        "leader": leader,
        "leader_changed": leader_after != leader,
        "client_seconds": client_s,
        "writes_per_s": n / client_s,
        "window_seconds": window,
        "cpu_seconds": cpu,
        "idle_cpu_fraction": idle,
        "cpu_us_per_write": {x: s / n * 1e6 for x, s in cpu.items()},
        "leader_cpu_us_per_write": cpu[leader] / n * 1e6,
        "all_cpu_us_per_write": sum(cpu.values()) / n * 1e6,
        "idle_us_per_write": sum(idle.values()) * window / n * 1e6,
        "log_compacted": any(
            status_after[x].get("first_index") != status_before[x].get("first_index") for x in pids
        ),
        "disk_before": disk_before,
        "disk_after": disk_after,
        "bytes_per_write": {x: growth_per_write(disk_before[x], disk_after[x], n) for x in pids},
        "status_before": status_before,
        "status_after": status_after,
    }


def format_cost(r: Mapping[str, Any]) -> str:
    """The figures as a small table."""
    leader = r["leader"]
    nodes = r["nodes"]
    per_node = ", ".join(f"{x} {r['cpu_us_per_write'][x]:,.1f}" for x in nodes)
    key = ", each with an Idempotency-Key" if r.get("idempotency_key") else ""
    lines = [
        f"{r['writes']:,} writes through POST {r['path']}{key}, {r['connections']} connections, "
        f"{r['key_size']}-byte keys, {r['value_size']}-byte values; 3-node dkv, leader {leader}; "
        f"{r['writes_per_s']:,.0f} writes/s",
        f"  CPU per write: leader {r['leader_cpu_us_per_write']:,.1f} µs, all members "
        f"{r['all_cpu_us_per_write']:,.1f} µs ({per_node}; of it idle about {r['idle_us_per_write']:,.1f})",
        "  bytes on disk per write (growth of the LMDB pages in use):",
    ]
    dbs = sorted({name for x in nodes for name in r["bytes_per_write"][x]["dbs"]})
    header = ["", *(f"{x}{' (leader)' if x == leader else ''}" for x in nodes)]
    rows = [header]
    for name in dbs:
        cells = []
        for x in nodes:
            d = r["bytes_per_write"][x]["dbs"].get(name)
            cells.append("-" if d is None else f"{d['bytes']:,.1f} B ({d['entries']:.2f} entries)")
        rows.append([f"db {name}", *cells])
    rows.append(["pages in use", *(f"{r['bytes_per_write'][x]['used']:,.1f} B" for x in nodes)])
    rows.append(["file high-water", *(f"{r['bytes_per_write'][x]['high_water']:,.1f} B" for x in nodes)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("    " + "  ".join(cells).rstrip())
    notes = []
    if r["log_compacted"]:
        notes.append("the log was compacted during the measure: the log's growth understates its cost")
    if r["leader_changed"]:
        notes.append("the leader changed during the measure")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)


def idempotency_difference(without: Mapping[str, Any], with_key: Mapping[str, Any]) -> dict[str, Any]:
    """What an Idempotency-Key adds per write (with minus without): µs of
    the leader's and of all members' CPU, and on the leader the bytes of
    pages in use, of the high-water mark and of each named database."""
    before = without["bytes_per_write"][without["leader"]]
    after = with_key["bytes_per_write"][with_key["leader"]]
    zero = {"bytes": 0.0}
    return {
        "leader_cpu_us_per_write": with_key["leader_cpu_us_per_write"] - without["leader_cpu_us_per_write"],
        "all_cpu_us_per_write": with_key["all_cpu_us_per_write"] - without["all_cpu_us_per_write"],
        "leader_used_bytes_per_write": after["used"] - before["used"],
        "leader_high_water_bytes_per_write": after["high_water"] - before["high_water"],
        "leader_db_bytes_per_write": {
            name: after["dbs"].get(name, zero)["bytes"] - before["dbs"].get(name, zero)["bytes"]
            for name in sorted(set(before["dbs"]) | set(after["dbs"]))
        },
    }


def median_difference(diffs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The median over rounds of each figure of ``idempotency_difference``,
    with ``range`` the (min, max) of each top-level figure."""
    keys = [k for k in diffs[0] if k != "leader_db_bytes_per_write"]
    names = sorted({name for d in diffs for name in d["leader_db_bytes_per_write"]})
    out: dict[str, Any] = {k: statistics.median(d[k] for d in diffs) for k in keys}
    out["leader_db_bytes_per_write"] = {
        name: statistics.median(d["leader_db_bytes_per_write"].get(name, 0.0) for d in diffs) for name in names
    }
    out["range"] = {k: (min(d[k] for d in diffs), max(d[k] for d in diffs)) for k in keys}
    out["rounds"] = len(diffs)
    return out


def format_difference(d: Mapping[str, Any]) -> str:
    """The cost of an Idempotency-Key per write, in a few lines (with the
    range over rounds when there were several)."""

    def fig(key: str, unit: str) -> str:
        text = f"{d[key]:+,.1f} {unit}"
        if d.get("rounds", 1) > 1:
            lo, hi = d["range"][key]
            text += f" ({lo:+,.1f} to {hi:+,.1f})"
        return text

    dbs = ", ".join(f"{name} {b:+,.1f} B" for name, b in d["leader_db_bytes_per_write"].items() if b)
    rounds = d.get("rounds", 1)
    title = f"median of {rounds} rounds, " if rounds > 1 else ""
    return "\n".join([
        f"What an Idempotency-Key adds per write ({title}with minus without):",
        f"  CPU: leader {fig('leader_cpu_us_per_write', 'µs')}, all members {fig('all_cpu_us_per_write', 'µs')}",
        f"  bytes on disk on the leader: pages in use {fig('leader_used_bytes_per_write', 'B')}, "
        f"high-water {fig('leader_high_water_bytes_per_write', 'B')} ({dbs or 'no named database changed'})",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and report; 0 on success, 1 on a failure, 2 when dkv does not
    serve the chosen API."""
    args = parse_args(argv)
    machine = machine_info(None, None, args.tmp_dir)
    try:
        if args.idempotency:
            pairs = []
            for _ in range(args.rounds):
                without = measure_cost(args)
                with_key = measure_cost(args, idempotency=True)
                diff = idempotency_difference(without, with_key)
                pairs.append({"without_key": without, "with_key": with_key, "difference": diff})
            median = median_difference([p["difference"] for p in pairs])
            figures: dict[str, Any] = {"rounds": pairs, "difference": median}
        else:
            figures = measure_cost(args)
    except NotServed as e:
        print(f"write_cost: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, Timeout, lmdb.Error) as e:
        print(f"write_cost: {e}", file=sys.stderr)
        return 1
    finally:
        close_all()
    out = args.out or default_out(args.api, machine["dkv_commit"], machine["dkv_code_modified"], args.idempotency)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, **figures}, indent=1, default=str) + "\n")
    if args.idempotency:
        last = figures["rounds"][-1]
        print(format_cost(last["without_key"]))
        print()
        print(format_cost(last["with_key"]))
        print()
        print(format_difference(figures["difference"]))
    else:
        print(format_cost(figures))
    print(f"\nwrote {out}")
    return 0
