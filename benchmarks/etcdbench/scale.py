# test-case-name: tests.test_vs_etcd_script
"""The scale figures: load N unique keys into a fresh dkv cluster, then each
node's resident memory, how long a follower killed with kill -9 takes to
answer and catch up, and how long a new node takes to catch up by snapshot."""

from __future__ import annotations

import argparse
import math
import signal
import time
from pathlib import Path
from typing import Any

from dkv.config import DEFAULT_PEER_TRANSPORT, DEFAULT_QUOTA_BYTES
from dkv.testing.poll import wait_until
from etcdbench.dkv_cluster import DkvCluster
from etcdbench.load import WrkJob, parse_wrk_output, run_has_errors
from etcdbench.procstat import memory_mb


def _node_line(node: str, info: dict[str, Any]) -> str:
    """A node's scale figures: role, memory, db file."""
    text = f"RSS {info['rss_mb']:.0f} MiB" if info.get("rss_mb") is not None else "RSS n/a"
    if info.get("rss_anon_mb") is not None and info.get("rss_file_mb") is not None:
        text += f" ({info['rss_anon_mb']:.0f} anon, {info['rss_file_mb']:.0f} file-mapped)"
    return f"node {node} ({info['role']}): {text}, db file {info['db_file_mb']:.0f} MiB"


#: Seconds without a commit while loading after which the load is given up.
STALL_SECONDS = 60.0


def quota_bytes_for(keys: int, key_size: int, value_size: int) -> int:
    """A space quota (``--quota-backend-bytes``) that holds keys of this
    size with room to spare: four times the payload (a key costs about
    three times its payload in the db: its live state, index entry, history
    record and log entry), in whole GiB, and never below the node's default
    (2 GiB, as etcd's): 5 million 256-byte values need about 3.6 GiB."""
    need = keys * (key_size + value_size) * 4
    gib = 1 << 30
    return max(DEFAULT_QUOTA_BYTES, -(-need // gib) * gib)


def scale_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Load args.scale keys into a fresh dkv cluster (its space quota sized
    for them: ``quota_bytes_for``), then measure memory, follower restart
    and catch-up by snapshot of a new node. A load that commits nothing for
    ``STALL_SECONDS`` is given up, with the error saying so."""
    n = args.scale
    quota_bytes = quota_bytes_for(n, args.key_size, args.value_size)
    out: dict[str, Any] = {"keys_requested": n, "connections": args.scale_connections, "quota_bytes": quota_bytes}
    flags = ("--quota-backend-bytes", str(quota_bytes))
    with DkvCluster(args.tmp_dir, getattr(args, "peer_transport", DEFAULT_PEER_TRANSPORT), extra_args=flags) as c:
        c.start()
        leader = c.leader()
        out["leader"] = leader
        base = c.status(leader)["commit_index"]  # type: ignore[index]
        done_dir = c.dir / "load-done"
        done_dir.mkdir()
        threads = min(args.threads, args.scale_connections)
        quota = math.ceil(n / threads)
        cap = args.scale_timeout
        job = WrkJob(
            url=f"http://127.0.0.1:{c.rest[leader]}",
            system="dkv",
            api="v0",
            op="load",
            connections=args.scale_connections,
            threads=threads,
            duration=cap,
            timeout=args.wrk_timeout,
            key_size=args.key_size,
            value_size=args.value_size,
            tag=1,
            quota=quota,
            done_dir=str(done_dir),
        )
        print(
            f"scale: loading {n:,} keys into dkv ({args.scale_connections} connections to the leader, "
            f"space quota {quota_bytes / (1 << 30):.0f} GiB) ...",
            flush=True,
        )
        start = time.monotonic()
        wrk = job.process(args.wrk)
        wrk.start()
        last_report = last_moved = start
        last_commit = base
        stalled = ""
        while len(list(done_dir.iterdir())) < threads and wrk.alive and time.monotonic() - start < cap:
            time.sleep(0.1)
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                s = c.status(leader)
                if s:
                    print(
                        f"  ... {s['commit_index'] - base:,} entries committed after {last_report - start:.0f}s",
                        flush=True,
                    )
                    if s["commit_index"] != last_commit:
                        last_commit, last_moved = s["commit_index"], last_report
                if last_report - last_moved >= STALL_SECONDS:
                    stalled = f"the load stalled: nothing committed for {last_report - last_moved:.0f}s"
                    break
        load_s = time.monotonic() - start
        wrk.signal(signal.SIGINT)  # wrk prints its results (done()) on SIGINT
        try:
            text = wrk.output(timeout=60)
        finally:
            wrk.close()
        res = parse_wrk_output(text)
        out["load"] = {
            "seconds": load_s,
            "keys_written": res["ok"],
            "keys_per_s": res["ok"] / load_s,
            "wrk": res,
            "all_threads_done": len(list(done_dir.iterdir())) >= threads,
        }
        print(f"  loaded {res['ok']:,} keys in {load_s:.1f}s ({res['ok'] / load_s:,.0f} keys/s)", flush=True)
        if stalled or run_has_errors(res) or not out["load"]["all_threads_done"]:
            sample = res.get("error_sample") or ""
            out["error"] = (
                f"load incomplete or with errors{': ' + stalled if stalled else ''}: {res['non2xx']} non-2xx, "
                f"{res['socket_errors']} socket errors{'; e.g. ' + sample if sample else ''}"
            )
            return out

        def caught_up(*nodes: str, need_snapshot: bool = False) -> bool:
            """Every node has applied the leader's commit index (asked once)."""
            s = c.status(c.leader())
            commit = int(s["commit_index"]) if s else 1 << 62
            for node in nodes:
                s = c.status(node)
                if not s or s["applied_index"] < commit or (need_snapshot and not s.get("snapshot_index", 0)):
                    return False
            return True

        wait_until(lambda: caught_up(*c.voters), 600, "the followers to catch up", 0.2)
        time.sleep(1.0)  # let the last compaction settle before looking at memory
        statuses = {x: c.status(x) for x in c.voters}
        out["nodes"] = {
            x: {
                "role": (statuses[x] or {}).get("role"),
                **memory_mb(c.pid(x)),
                "db_file_mb": _file_mb(c.dir / f"{x}.db"),
                "applied_index": (statuses[x] or {}).get("applied_index"),
                "snapshot_index": (statuses[x] or {}).get("snapshot_index"),
            }
            for x in c.voters
        }
        for x, info in out["nodes"].items():
            print(f"  {_node_line(x, info)}", flush=True)

        follower = next(x for x in c.voters if x != c.leader())
        c.kill(follower)
        start = time.monotonic()
        c.restart(follower)
        wait_until(lambda: c.status(follower) is not None, args.scale_wait, f"{follower} to answer", 0.02)
        answers = time.monotonic() - start
        wait_until(lambda: caught_up(follower), args.scale_wait, f"{follower} to catch up", 0.02)
        total = time.monotonic() - start
        out["follower_restart"] = {
            "node": follower,
            "signal": "SIGKILL",
            "status_answers_s": answers,
            "caught_up_s": total,
            "rss_mb_after": memory_mb(c.pid(follower)).get("rss_mb"),
        }
        print(
            f"  follower {follower} killed (-9) and restarted: status answers after {answers:.2f}s, "
            f"caught up after {total:.2f}s",
            flush=True,
        )

        leader = c.leader()
        leader_first_index = (c.status(leader) or {}).get("first_index")
        # Below the node's compaction threshold the log still starts at its
        # first entry, and a new node catches up by replaying it, not by snapshot.
        by_snapshot = int(leader_first_index or 0) > 1
        how = "by snapshot" if by_snapshot else "by log replay (the log was never compacted)"
        start = time.monotonic()
        c.join("d", via=leader)
        wait_until(lambda: c.status("d") is not None, args.scale_wait, "the new node to answer", 0.02)
        answers = time.monotonic() - start
        wait_until(
            lambda: caught_up("d", need_snapshot=by_snapshot), args.scale_wait, f"the new node to catch up {how}", 0.02
        )
        total = time.monotonic() - start
        sd = c.status("d") or {}
        out["new_node"] = {
            "node": "d",
            "joined_via": leader,
            "leader_first_index": leader_first_index,
            "by_snapshot": by_snapshot,
            "status_answers_s": answers,
            "caught_up_s": total,
            "snapshot_index": sd.get("snapshot_index"),
            "applied_index": sd.get("applied_index"),
            **memory_mb(c.pid("d")),
            "db_file_mb": _file_mb(c.dir / "d.db"),
        }
        print(
            f"  new node d joined via {leader}: status answers after {answers:.2f}s, caught up {how} "
            f"(snapshot_index {sd.get('snapshot_index')}) after {total:.2f}s",
            flush=True,
        )
    return out


def _file_mb(path: Path) -> float | None:
    """Allocated size on disk of path in MiB (LMDB files are sparse)."""
    try:
        return path.stat().st_blocks * 512 / (1024 * 1024)
    except OSError:
        return None


def format_scale(scale: dict[str, Any]) -> str:
    """The scale figures as a few lines."""
    if "error" in scale and "nodes" not in scale:
        return f"scale: {scale['error']}"
    lines = [
        f"scale: {scale['load']['keys_written']:,} keys loaded in {scale['load']['seconds']:.1f}s "
        f"({scale['load']['keys_per_s']:,.0f} keys/s, {scale['connections']} connections)"
    ]
    for x, info in scale["nodes"].items():
        lines.append(f"  {_node_line(x, info)}")
    fr = scale.get("follower_restart")
    if fr:
        lines.append(
            f"  follower restart ({fr['signal']}): answers after {fr['status_answers_s']:.2f}s, "
            f"caught up after {fr['caught_up_s']:.2f}s"
        )
    nn = scale.get("new_node")
    if nn:
        lines.append(
            f"  new node catch-up {'by snapshot' if nn.get('by_snapshot', True) else 'by log replay'}: "
            f"{nn['caught_up_s']:.2f}s "
            f"(answers after {nn['status_answers_s']:.2f}s, snapshot_index {nn['snapshot_index']})"
        )
    return "\n".join(lines)
