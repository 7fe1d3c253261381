# test-case-name: tests.test_scaling_script
"""The scaling picture (``python benchmarks/scaling.py``; the command line
is ``scaling_cli``): how dkv's and etcd's costs grow with one parameter at
a time, on the comparison's clusters (``dkv_cluster``, ``etcd``) and its
wrk load (``load``). Each section returns its points (one per system,
parameter value and operation), a one-line statement of how the cost
grows (``growth``) and, for the chart, what to plot.

``size``     members 3, 5, 7: writes and linearizable reads at 64 connections
``value``    value bytes: writes and reads, req/s and MiB/s
``keys``     keys in the store (dkv only, ``scale.scale_phase``): write rate,
             RSS, db size, follower restart, new member's catch-up by snapshot
``conns``    client connections: throughput and p99, where each saturates
``catchup``  a follower paused (SIGSTOP) then resumed under load: its catch-up
             time and the leader's memory meanwhile
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dkv.testing.poll import wait_until
from etcdbench.dkv_cluster import DkvCluster
from etcdbench.etcd import EtcdCluster
from etcdbench.growth import describe, loglog_slope, name_slope, saturation
from etcdbench.load import Tags, WrkJob, measure, parse_wrk_output, prepopulate, v3_probe
from etcdbench.procstat import memory_mb
from etcdbench.runs import BenchCluster, RunSpec
from etcdbench.scale import scale_phase

SECTIONS = ("size", "value", "keys", "conns", "catchup")
#: dkv's and etcd's default request limit (dkv's max_body_bytes, etcd's --max-request-bytes).
REQUEST_LIMIT = 1536 * 1024
#: Bytes of JSON around a put's base64 key and value (generous).
_PUT_OVERHEAD = 256


def put_body_bytes(value_size: int, key_size: int = 8) -> int:
    """The size of a JSON put of a value_size-byte value: base64 of key and
    value plus the JSON around them (an upper bound)."""
    return 4 * -(-value_size // 3) + 4 * -(-key_size // 3) + _PUT_OVERHEAD


def open_cluster(system: str, args: argparse.Namespace, size: int = 3) -> BenchCluster:
    """A new (not started) cluster of size members of system."""
    if system == "etcd":
        return EtcdCluster(args.etcd, args.tmp_dir, size)
    return DkvCluster(args.tmp_dir, args.peer_transport, size)


def bench_args(args: argparse.Namespace, **over: Any) -> argparse.Namespace:
    """The settings ``load.measure`` reads, from the scaling command line,
    with over's changes (value_size, read_keys, ...)."""
    base = {
        "wrk": args.wrk, "threads": args.threads, "warmup": args.warmup, "duration": args.duration,
        "wrk_timeout": args.wrk_timeout, "key_size": 8, "value_size": 256, "read_keys": args.read_keys,
        "range_prefixes": 1,
    }  # fmt: skip
    return argparse.Namespace(**(base | over))


def spec(op: str, connections: int, api: str) -> RunSpec:
    """A run of op at connections to the leader through api (v0: each
    system's own API, v3: etcd's paths on both)."""
    prefix = "v3-" if api == "v3" else ""
    return RunSpec(f"{prefix}{op}-{connections}", op, connections, "leader", api)


def point_has_errors(r: dict[str, Any]) -> bool:
    """Like ``load.run_has_errors``, except that 429 answers (a server
    shedding load it cannot take: "too many requests") are not errors here:
    the point counts them apart (``rejected``)."""
    return bool(r["socket_errors"] or r["misses"] or r["non2xx"] - r.get("rejected", 0))


def point(r: dict[str, Any], system: str, param: str, value: float, op: str, **extra: Any) -> dict[str, Any]:
    """One measured run as a point of a section: throughput (2xx answers
    per second), p50, p99, CPU per 10,000 requests, errors, rejected (429s)."""
    return {
        "system": system, param: value, "op": op, "throughput": r["throughput"], "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"], "cpu_s_per_10k": r.get("cpu_s_per_10k"), "errors": point_has_errors(r),
        "non2xx": r["non2xx"], "rejected": r.get("rejected", 0), "socket_errors": r["socket_errors"],
        "misses": r["misses"], "error_sample": r.get("error_sample", ""), **extra,
    }  # fmt: skip


def median_points(points: Sequence[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """Points of several rounds merged per (system, param value, op): the
    median of every number, errors if any round had errors, ``rounds``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["system"], p[param], p["op"]), []).append(p)
    out = []
    for same in groups.values():
        merged = dict(same[0])
        for k, v in same[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != param:
                vals = [p[k] for p in same if p.get(k) is not None]
                merged[k] = statistics.median(vals) if vals else None
        merged["errors"] = any(p["errors"] for p in same)
        merged["rounds"] = len(same)
        out.append(merged)
    return out


def series(points: Iterable[dict[str, Any]], param: str, field: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per "system op" the (xs, ys) of field over param, sorted by param."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for p in sorted(points, key=lambda p: p[param]):
        if p.get(field) is None:
            continue
        xs, ys = out.setdefault(f"{p['system']} {p['op']}", ([], []))
        xs.append(p[param])
        ys.append(p[field])
    return out


def cost_statement(section: str, points: Sequence[dict[str, Any]], param: str, what: str) -> str:
    """'SECTION: time per op as PARAM grows: dkv write linear (slope 1.02), ...':
    the growth of 1/throughput (the cluster's time per request) per series."""
    parts = []
    for name, (xs, ys) in series(points, param, "throughput").items():
        cost = [1 / y if y else 0.0 for y in ys]
        slope = loglog_slope(xs, cost)
        parts.append(f"{name} {name_slope(slope)}" + (f" ({slope:.2f})" if slope is not None else ""))
    return f"{section}: {what} as {param} grows (log-log slope): " + ", ".join(parts)


def measure_runs(
    system: str, args: argparse.Namespace, specs: Sequence[RunSpec], size: int = 3, **over: Any
) -> list[dict[str, Any]]:
    """Start a fresh cluster of size members of system, write the read keys
    if a run reads, measure every run; their results (with ``size``)."""
    ns = bench_args(args, **over)
    with open_cluster(system, args, size) as cluster:
        cluster.start(timeout=120.0)
        if any(s.api == "v3" for s in specs) and (why := v3_probe(cluster.leader_url())) is not None:
            raise RuntimeError(f"{system} does not serve etcd's gateway: {why}")
        if any(s.op == "read" for s in specs):
            prepopulate(cluster, ns.read_keys, ns.key_size, ns.value_size)
        tags = Tags()
        out = []
        for s in specs:
            r = measure(cluster, s, ns, tags)
            print(
                f"  {system:4} {size} members, {s.name:14} values {ns.value_size:>8,} B: "
                f"{r['throughput']:>9,.0f} req/s  p99 {r['p99_ms']:8.2f} ms"
                + (f"  {r['rejected']:,} rejected (429)" if r.get("rejected") else "")
                + ("  ERRORS " + r["error_sample"][:80] if point_has_errors(r) else ""),
                flush=True,
            )
            out.append(r)
    return out


def sweep(
    args: argparse.Namespace,
    param: str,
    values: Sequence[int],
    connections: int,
    run: Callable[[str, list[RunSpec], int], list[dict[str, Any]]],
    extra: Callable[[dict[str, Any], int], dict[str, Any]] = lambda r, v: {},
) -> list[dict[str, Any]]:
    """Writes and reads at each value of param, per system, args.rounds
    times (run measures the specs for a system at a value); the median
    point of each (system, value, op)."""
    points = []
    for _ in range(args.rounds):
        for value in values:
            for system in args.systems:
                specs = [spec(op, connections, args.api) for op in ("write", "read")]
                for r, s in zip(run(system, specs, value), specs, strict=True):
                    points.append(point(r, system, param, value, s.op, **extra(r, value)))
    return median_points(points, param)


def section_size(args: argparse.Namespace) -> dict[str, Any]:
    """Cluster size: writes and reads at 64 connections, per system."""
    points = sweep(
        args, "members", args.sizes, args.size_connections,
        lambda system, specs, n: measure_runs(system, args, specs, size=n),
    )  # fmt: skip
    panels = [("throughput", "req/s", False), ("cpu_s_per_10k", "CPU-s of all members per 10k requests", False)]
    return {
        "points": points,
        "statement": cost_statement("size", points, "members", "time per request"),
        "chart": {"param": "members", "panels": panels},
    }


def value_read_keys(args: argparse.Namespace, value_size: int) -> int:
    """Read keys written before a value-size run: args.read_keys, fewer for
    big values (at most args.value_read_mib MiB of them, at least 16)."""
    return max(16, min(args.read_keys, args.value_read_mib * 2**20 // value_size))


def section_value(args: argparse.Namespace) -> dict[str, Any]:
    """Value size: writes and reads, req/s and MiB/s, per system."""
    points = sweep(
        args, "value_bytes", args.value_sizes, args.value_connections,
        lambda system, specs, size: measure_runs(
            system, args, specs, value_size=size, read_keys=value_read_keys(args, size)
        ),
        extra=lambda r, size: {"mib_per_s": r["throughput"] * size / 2**20},
    )  # fmt: skip
    return {
        "points": points,
        "statement": cost_statement("value", points, "value_bytes", "time per request"),
        "chart": {"param": "value_bytes", "panels": [("throughput", "req/s", True), ("mib_per_s", "MiB/s", True)]},
    }  # fmt: skip


def section_keys(args: argparse.Namespace) -> dict[str, Any]:
    """Keys in the store (dkv only): scale.scale_phase at each count."""
    points = []
    for n in args.key_counts:
        ns = argparse.Namespace(**vars(args))
        ns.scale, ns.key_size, ns.value_size = n, 8, 256
        figures = scale_phase(ns)
        if "error" in figures:
            raise RuntimeError(f"keys {n:,}: {figures['error']}")
        leader = figures["nodes"][figures["leader"]] if figures["leader"] in figures["nodes"] else {}
        nodes = figures["nodes"].values()
        points.append(
            {
                "system": "dkv", "op": "write", "keys": n, "errors": False,
                "keys_per_s": figures["load"]["keys_per_s"],
                "leader_rss_mb": leader.get("rss_mb"), "leader_rss_anon_mb": leader.get("rss_anon_mb"),
                "leader_rss_file_mb": leader.get("rss_file_mb"),
                "max_rss_mb": max((x.get("rss_mb") or 0) for x in nodes),
                "max_rss_anon_mb": max((x.get("rss_anon_mb") or 0) for x in nodes),
                "db_file_mb": max((x.get("db_file_mb") or 0) for x in nodes),
                "restart_serving_s": figures["follower_restart"]["status_answers_s"],
                "restart_caught_up_s": figures["follower_restart"]["caught_up_s"],
                "snapshot_catch_up_s": figures["new_node"]["caught_up_s"],
                "new_member_by_snapshot": figures["new_node"]["by_snapshot"],
                "figures": figures,
            }
        )  # fmt: skip
    xs = [p["keys"] for p in points]
    parts = [
        describe("time per write", xs, [1 / p["keys_per_s"] for p in points]),
        describe("RSS anon", xs, [p["max_rss_anon_mb"] for p in points]),
        describe("RSS", xs, [p["max_rss_mb"] for p in points]),
        describe("db size", xs, [p["db_file_mb"] for p in points]),
        describe("restart to serving", xs, [p["restart_serving_s"] for p in points]),
        describe("new member's catch-up", xs, [p["snapshot_catch_up_s"] for p in points]),
    ]
    replayed = [f"{p['keys']:,}" for p in points if not p["new_member_by_snapshot"]]
    if replayed:
        parts.append(f"(at {', '.join(replayed)} keys the log was not compacted: the new member replayed it)")
    return {
        "points": points,
        "statement": "keys (dkv): " + "; ".join(parts),
        "chart": {"param": "keys", "panels": [
            ("keys_per_s", "writes/s while loading", True), ("max_rss_mb", "RSS MiB (max node)", True),
            ("max_rss_anon_mb", "RSS anon MiB", True), ("db_file_mb", "db MiB", True),
            ("restart_serving_s", "restart to serving s", True), ("snapshot_catch_up_s", "new member catch-up s", True),
        ]},
    }  # fmt: skip


def conns_statement(points: Sequence[dict[str, Any]]) -> str:
    """Where each series saturates and how p99 grows past it."""
    parts = []
    thr = series(points, "connections", "throughput")
    p99 = series(points, "connections", "p99_ms")
    for name, (xs, ys) in thr.items():
        sat = saturation(xs, ys)
        past = [(x, y) for x, y in zip(*p99[name], strict=True) if sat is not None and x >= sat]
        slope = loglog_slope([x for x, _ in past], [y for _, y in past]) if len(past) > 1 else None
        text = f"{name} saturates at {sat:g} conn ({max(ys):,.0f} req/s)"
        if slope is not None:
            text += f", p99 past it {name_slope(slope)} ({slope:.2f})"
        shed = sorted(p["connections"] for p in points if f"{p['system']} {p['op']}" == name and p.get("rejected"))
        if shed:
            text += f", sheds load (429) from {shed[0]:g} conn"
        parts.append(text)
    return "conns: " + "; ".join(parts)


def section_conns(args: argparse.Namespace) -> dict[str, Any]:
    """Connections: throughput and p99 per system and op."""
    points = []
    for _ in range(args.rounds):
        for system in args.systems:
            specs = [spec(op, c, args.api) for op in args.conns_ops for c in args.connections]
            for r, s in zip(measure_runs(system, args, specs), specs, strict=True):
                points.append(point(r, system, "connections", s.connections, s.op))
    points = median_points(points, "connections")
    return {
        "points": points,
        "statement": conns_statement(points),
        "chart": {"param": "connections", "panels": [("throughput", "req/s", True), ("p99_ms", "p99 ms", True)]},
    }


def catch_up(cluster: BenchCluster, args: argparse.Namespace, tag: int = 1) -> dict[str, Any]:
    """Under a write load on the leader, pause a follower for args.catchup_pause
    seconds, resume it, and time until it has applied what the leader had
    committed when it resumed (``catch_up_s``; ``lag_at_resume``: that
    index minus what the follower had applied when it was paused); the
    leader's RSS and both indexes over time (``samples``)."""
    leader, follower = cluster.leader_member(), cluster.follower_member()
    leader_pid = cluster.member_pids()[leader]
    job = WrkJob(
        url=cluster.leader_url(), system=cluster.system, api="v3" if args.api == "v3" else cluster.own_api,
        op="write", connections=args.catchup_connections, threads=min(args.threads, args.catchup_connections),
        duration=int(args.catchup_before + args.catchup_pause + args.catchup_timeout + 5), timeout=args.wrk_timeout,
        key_size=8, value_size=256, tag=tag,
    )  # fmt: skip
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    paused = False

    def sample() -> dict[str, Any]:
        lp = cluster.progress(leader)
        fp = None if paused else cluster.progress(follower)
        s = {
            "t": time.monotonic() - start,
            "leader_commit": lp[0] if lp else None,
            "follower_applied": fp[1] if fp else None,
            "leader_rss_mb": memory_mb(leader_pid).get("rss_mb"),
            "paused": paused,
        }
        samples.append(s)
        return s

    def sample_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sample()
            time.sleep(args.sample_interval)

    wrk = job.process(args.wrk)
    wrk.start()
    try:
        sample_for(args.catchup_before)
        cluster.pause(follower)
        paused = True
        paused_at = time.monotonic() - start
        try:
            sample_for(args.catchup_pause)
        finally:
            cluster.resume(follower)
            paused = False
        resumed_at = time.monotonic() - start
        lp = cluster.progress(leader)
        if lp is None:
            raise RuntimeError(f"{cluster.system} leader {leader} did not say its commit index")
        target = lp[0]

        def done() -> bool:
            s = sample()
            return s["follower_applied"] is not None and s["follower_applied"] >= target

        wait_until(
            done, args.catchup_timeout, f"{cluster.system} follower {follower} to catch up", args.sample_interval
        )
        caught = time.monotonic() - start
        sample_for(1.0)
    finally:
        wrk.signal(signal.SIGINT)  # wrk prints its results on SIGINT
        text = wrk.output(timeout=60)
        wrk.close()
    res = parse_wrk_output(text)
    before = [s for s in samples if s["t"] < paused_at and s["leader_commit"] is not None]
    during = [s for s in samples if paused_at <= s["t"] < resumed_at and s["leader_commit"] is not None]
    rss = [s["leader_rss_mb"] for s in samples if s["leader_rss_mb"] is not None]
    rss_before = [s["leader_rss_mb"] for s in before if s["leader_rss_mb"] is not None]
    return {
        "system": cluster.system, "leader": leader, "follower": follower, "paused_s": resumed_at - paused_at,
        "lag_at_resume": target - max((s["follower_applied"] or 0) for s in samples if s["t"] < paused_at),
        "catch_up_s": caught - resumed_at,
        "commits_per_s_before": _rate(before), "commits_per_s_paused": _rate(during),
        "leader_rss_mb_before": max(rss_before) if rss_before else None,
        "leader_rss_mb_max": max(rss) if rss else None,
        "throughput": res["throughput"], "errors": point_has_errors(res), "non2xx": res["non2xx"],
        "rejected": res["rejected"],
        "socket_errors": res["socket_errors"], "error_sample": res["error_sample"], "samples": samples,
        "paused_at": paused_at, "resumed_at": resumed_at, "caught_up_at": caught,
    }  # fmt: skip


def _rate(samples: Sequence[dict[str, Any]]) -> float | None:
    """Entries committed per second over samples (first to last)."""
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return None
    return float((samples[-1]["leader_commit"] - samples[0]["leader_commit"]) / (samples[-1]["t"] - samples[0]["t"]))


def section_catchup(args: argparse.Namespace) -> dict[str, Any]:
    """A follower paused then resumed under load, per system."""
    points = []
    for system in args.systems:
        with open_cluster(system, args) as cluster:
            cluster.start(timeout=120.0)
            p = catch_up(cluster, args)
        print(
            f"  {system:4} follower paused {p['paused_s']:.1f}s: {p['lag_at_resume']:,} entries behind, caught up "
            f"{p['catch_up_s']:.2f}s after resuming; leader RSS {p['leader_rss_mb_before'] or 0:.0f} -> max "
            f"{p['leader_rss_mb_max'] or 0:.0f} MiB; {p['commits_per_s_before'] or 0:,.0f} entries/s before, "
            f"{p['commits_per_s_paused'] or 0:,.0f} while paused",
            flush=True,
        )
        points.append(p)
    parts = [
        f"{p['system']} {p['lag_at_resume']:,} entries in {p['catch_up_s']:.2f}s "
        f"({p['lag_at_resume'] / p['catch_up_s'] if p['catch_up_s'] > 0 else 0:,.0f} entries/s), leader RSS "
        f"+{(p['leader_rss_mb_max'] or 0) - (p['leader_rss_mb_before'] or 0):.0f} MiB"
        for p in points
    ]
    return {"points": points, "statement": "catchup: " + "; ".join(parts), "chart": {"param": "t", "panels": []}}


#: Each section's function.
RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "size": section_size,
    "value": section_value,
    "keys": section_keys,
    "conns": section_conns,
    "catchup": section_catchup,
}


def has_errors(result: dict[str, Any]) -> bool:
    """Whether any point of a section's result had errors."""
    return any(p.get("errors") for p in result.get("points", ()))


def to_json(result: dict[str, Any]) -> str:
    """A section's result as JSON text."""
    return json.dumps(result, indent=1, default=str)
