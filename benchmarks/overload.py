"""dkv under 4x the load it can sustain: admission control keeps memory,
latency and throughput in bounds (issue 15, overload).

    python benchmarks/overload.py                 # 5 minutes of overload (the criterion's length)
    python benchmarks/overload.py --duration 60   # a quick run

Starts a 3-node dkv cluster (``dkv.testing.cluster``, the node's default
timings, no proxies; ``--node-arg`` adds flags to every node), then, with
wrk and ``etcdbench/overload.lua``, puts keys through ``/v0`` on the
leader: ``--keys`` (100,000) keys of a fixed set, drawn at random, so every
write is a new revision but the data (keys and values) stays bounded
(``--keys 0``: a new key per write, as before: memory then follows the
keys written, not the load). dkv keeps every revision until its history is
compacted; the nodes compact only when asked (``--node-arg
--auto-compaction-retention=1m``, off by default, as etcd's).

1. **sustainable**: 64 connections in a closed loop for ``--sustain``
   seconds (after a warm-up): the admitted rate is the sustainable rate,
   and the p99 of its answers the unloaded p99 (no request is refused at
   that load with the default bounds).
2. **overload**: ``--connections`` (1,000) connections, each pausing
   between its requests (wrk's ``delay()``, ~connections / (factor x
   sustainable) seconds, jittered) so that together they offer ``--factor``
   (4) times the sustainable rate, for ``--duration`` seconds: an open-ish
   load at a fixed rate, not wrk's closed loop, which would resend each
   refusal at once. A connection refused with 429 waits its
   ``Retry-After`` before its next request, as etcd's clients back off.
   ``--probes`` (64) of them run one per wrk thread, so each admitted
   answer is timed (wrk's own latencies mix refused answers in); the rest
   count answers only.
   Every node's RSS is read from ``/proc/PID/status`` every second: VmRSS
   and its parts RssAnon (heap, stacks: what the queues and the node's
   state take) and RssFile (file pages mapped in: mostly LMDB's read-only
   map of the db, page cache the kernel can reclaim).

It prints and writes (``--out``) JSON: the offered rate (target and
actual), peak RSS per node, the admitted p99 against the unloaded p99, the
admitted rate against the sustainable rate,
how many were refused (429), other errors, and PASS / FAIL for each
criterion: VmRSS of every node under ``--rss-bound-mib`` plus its db
file's size (the pages of LMDB's map of the db are resident once touched:
at most the file, which the space quota bounds), and its RssAnon under
``--rss-anon-bound-mib``; admitted p99 within
2x the unloaded p99; admitted throughput at least 80 % of the sustainable
rate. Exits 1 if any criterion fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # etcdbench, then this checkout's dkv

from etcdbench.overload import merge, parse_result, percentile_ms, verdicts  # noqa: E402
from etcdbench.scale import memory_mb  # noqa: E402

from dkv.testing.cluster import Cluster  # noqa: E402

LUA = HERE / "etcdbench" / "overload.lua"
SUSTAIN_CONNECTIONS = 64


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=300, help="seconds of overload (default 300)")
    p.add_argument("--sustain", type=int, default=20, help="seconds of the sustainable-rate run (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="seconds of warm-up before it (default 5)")
    p.add_argument("--connections", type=int, default=1000, help="connections during the overload (default 1000)")
    p.add_argument("--probes", type=int, default=64, help="of them, timed ones, one per wrk thread (default 64)")
    p.add_argument("--factor", type=float, default=4.0, help="offered load / sustainable rate (default 4)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument(
        "--keys",
        type=int,
        default=100_000,
        help="keys written, drawn at random from a fixed set (default 100000; 0: a new key per write)",
    )
    p.add_argument(
        "--rss-bound-mib",
        type=float,
        default=512.0,
        help="VmRSS bound per node besides its db file's size (LMDB's map of the db; default 512 MiB)",
    )
    p.add_argument("--rss-anon-bound-mib", type=float, default=256.0, help="RssAnon bound per node (default 256 MiB)")
    p.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="a flag for every node, e.g. --node-arg=--max-pending-proposals=256",
    )
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="the wrk binary")
    p.add_argument("--out", type=Path, default=HERE / "results" / "overload.json", help="where the JSON goes")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs) at the end")
    return p.parse_args(argv)


class RssSampler:
    """Reads each node's memory every second on a thread (VmRSS, RssAnon,
    RssFile, in MiB: ``etcdbench.scale.memory_mb``); keeps the peaks and the
    series."""

    FIELDS = ("rss_mb", "rss_anon_mb", "rss_file_mb")

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        #: node -> field -> the highest value seen.
        self.peaks: dict[str, dict[str, float]] = {}
        #: node -> field -> a value a second.
        self.series: dict[str, dict[str, list[float]]] = {n: {f: [] for f in self.FIELDS} for n in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def peak(self, field: str = "rss_mb") -> dict[str, int]:
        """Node -> the peak of field (VmRSS by default) in bytes."""
        return {n: int(p[field] * 2**20) for n, p in self.peaks.items() if field in p}

    def peak_mib(self) -> dict[str, dict[str, float]]:
        return {n: {f: round(v, 1) for f, v in p.items()} for n, p in self.peaks.items()}

    def series_mib(self) -> dict[str, dict[str, list[float]]]:
        return {n: {f: [round(v, 1) for v in s] for f, s in fields.items()} for n, fields in self.series.items()}

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            for node, pid in self.pids.items():
                memory = memory_mb(pid)
                peaks = self.peaks.setdefault(node, {})
                for field, value in memory.items():
                    self.series[node][field].append(value)
                    peaks[field] = max(peaks.get(field, 0.0), value)
            if self._stop.wait(1.0):
                return


def run_wrk(
    wrk: str, url: str, jobs: list[tuple[int, int, bool, float, str]], duration: int, value_size: int, keys: int
) -> dict[str, Any]:
    """Run wrk processes at once, one per (threads, connections, timed,
    delay_ms, tag); their merged result."""
    procs = []
    try:
        for threads, connections, timed, delay_ms, tag in jobs:
            argv = [
                wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "-s", str(LUA), url,
                "--", "1" if timed else "0", f"{delay_ms:.3f}", tag, str(value_size), str(keys),
            ]  # fmt: skip
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=duration + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out[-2000:]}")
            results.append(parse_result(out))
        return merge(results)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def rate(result: dict[str, Any], key: str = "ok") -> float:
    return float(result[key]) / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "admitted": result["ok"],
        "refused_429": result["refused"],
        "other_non_2xx": result["other"],
        "refused_without_retry_after": result["no_retry_after"],
        "retry_after_waits": result["backoffs"],
        "socket_errors": result["errors"],
        "requests": result["requests"],
        "seconds": round(result["duration_us"] / 1e6, 2),
        "admitted_per_s": round(rate(result), 1),
        "offered_per_s": round(rate(result, "requests"), 1),
        "p50_admitted_ms": percentile_ms(result["hist"], 0.50),
        "p99_admitted_ms": percentile_ms(result["hist"], 0.99),
    }


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.probes >= args.connections:
        raise SystemExit("--probes must be fewer than --connections")
    workdir = Path(tempfile.mkdtemp(prefix="dkv-overload-"))
    cluster = Cluster(
        workdir, tick_ms=None, election_ticks=None, heartbeat_ticks=None, request_timeout=None,
        log_level="warn", proxy_links=False, extra_args=tuple(args.node_arg),
    )  # fmt: skip
    report: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    tag = f"ov{int(time.time())}"
    try:
        cluster.start(timeout=60)
        leader = cluster.wait_settled(60)
        url = f"http://127.0.0.1:{cluster.rest_ports[leader]}"
        pids = {n: p.pid for n, p in cluster.nodes.items() if p.pid is not None}
        print(f"cluster up, leader {leader}; warm-up {args.warmup} s", file=sys.stderr)
        one_each = (SUSTAIN_CONNECTIONS, SUSTAIN_CONNECTIONS, True, 0.0)
        # With a fixed key set every phase writes the same keys (one tag).
        tags = dict.fromkeys("wsfp", f"{tag}k") if args.keys > 0 else {p: f"{tag}{p}" for p in "wsfp"}
        run_wrk(args.wrk, url, [(*one_each, tags["w"])], args.warmup, args.value_size, args.keys)

        print(f"sustainable rate: {SUSTAIN_CONNECTIONS} connections for {args.sustain} s", file=sys.stderr)
        with RssSampler(pids) as rss_sustain:
            sustained = run_wrk(args.wrk, url, [(*one_each, tags["s"])], args.sustain, args.value_size, args.keys)
        sustainable = rate(sustained)
        report["sustainable"] = summary(sustained) | {"peak_rss_mib": rss_sustain.peak_mib()}
        print(json.dumps(report["sustainable"]), file=sys.stderr)
        if sustainable <= 0:
            raise RuntimeError("nothing was admitted at the sustainable load")

        offered = args.factor * sustainable
        delay_ms = 1000.0 * args.connections / offered  # per connection, between its requests
        flood = args.connections - args.probes
        print(
            f"overload: {args.connections} connections offering ~{offered:.0f}/s "
            f"({args.factor:g}x) for {args.duration} s",
            file=sys.stderr,
        )
        with RssSampler(pids) as rss:
            loaded = run_wrk(
                args.wrk, url,
                [(2, flood, False, delay_ms, tags["f"]), (args.probes, args.probes, True, delay_ms, tags["p"])],
                args.duration, args.value_size, args.keys,
            )  # fmt: skip
        report["overload"] = summary(loaded) | {
            "target_offered_per_s": round(offered, 1),
            "connections": args.connections,
            "rss_mib_every_second": rss.series_mib(),
        }
        # The p99 is read off the probes alone (the flood's answers are not timed).
        report["overload"]["p99_admitted_ms"] = percentile_ms(loaded["hist"], 0.99)
        report["peak_rss_mib"] = rss.peak_mib()
        # The history written stays in the db (no compaction): its mapped pages are RssFile.
        db_bytes = {n: _size(workdir / f"{n}.db") for n in pids}
        report["db_file_mib"] = {n: round(b / 2**20, 1) for n, b in db_bytes.items()}
        report["criteria"] = verdicts(
            peak_rss=rss.peak(),
            rss_bound=int(args.rss_bound_mib * 2**20),
            peak_rss_anon=rss.peak("rss_anon_mb"),
            rss_anon_bound=int(args.rss_anon_bound_mib * 2**20),
            db_bytes=db_bytes,
            p99_unloaded_ms=report["sustainable"]["p99_admitted_ms"],
            p99_admitted_ms=report["overload"]["p99_admitted_ms"],
            sustainable_rate=sustainable,
            admitted_rate=rate(loaded),
        )
        code, _ = cluster.put(leader, f"{tag}-after", "1", timeout=10)
        report["serving_after"] = code == 200
    finally:
        cluster.close()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    printed = {k: v for k, v in report.items() if k != "overload"}
    printed["overload"] = {k: v for k, v in report["overload"].items() if k != "rss_mib_every_second"}
    print(json.dumps(printed, indent=2))
    print(f"written to {args.out}", file=sys.stderr)
    failed = [name for name, c in report["criteria"].items() if c["verdict"] != "PASS"]
    return 1 if failed or not report["serving_after"] else 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
