# test-case-name: tests.test_bench_scripts
"""Lease grants and keep-alives, dkv against etcd (``python
benchmarks/lease_keepalive.py``; its help is this docstring).

    python benchmarks/lease_keepalive.py                       # 10,000 leases, 4 streams; dkv then etcd
    python benchmarks/lease_keepalive.py --leases 1000 --duration 3 --systems etcd
    python benchmarks/lease_keepalive.py --target follower     # the clients on a follower

For each system in turn a fresh 3-member cluster is started (etcd by
``dkv.testing.etcd_cluster``, dkv by ``dkv.testing.cluster``); the clients
speak gRPC (``etcdserverpb.Lease``, the stubs of ``dkv.pb``) to the leader
or to a follower (``--target``).

Grants: ``--leases`` leases (default 10,000) of ``--ttl`` seconds (default
120: none expires during the run) are granted with ``LeaseGrant``, the
server choosing the IDs, ``--grant-concurrency`` calls in flight (default
64): grants/s and their p50/p99 latency.

Keep-alives: the leases are dealt over ``--streams`` ``LeaseKeepAlive``
streams (default 4) on one channel, and for ``--duration`` seconds
(default 10) each stream renews its leases in turn, round after round,
with at most ``--window`` requests unanswered (default 64; closed loop).
Latency is from a request's send to its answer (a stream answers in
order; each answer's ID is checked against its request's). Reported:
keep-alives/s over all streams, p50/p99, how often each lease was renewed,
the answers with TTL <= 0 (a lease the server no longer knows), and the
client's CPU (seconds per second: near 1, the client is the bound).

A system that answers UNIMPLEMENTED to LeaseGrant is skipped with a line
saying so. The client is Python (one process, a thread per stream) on the
same cores as the servers. The table (markdown) goes to stdout, every
figure as JSON to ``--out`` (default ``benchmarks/results/lease_keepalive.json``).
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from dkv.pb import etcd_rpc_pb2 as rpc
from dkv.pb import etcd_rpc_pb2_grpc as rpc_grpc
from etcdbench.grpc_streams import open_channel, probe_lease
from etcdbench.runs import BenchCluster
from etcdbench.sides import add_common_arguments, check_systems, run_main
from etcdbench.stats import Histogram, fmt_ms, markdown_table

NAME = "lease_keepalive"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="lease_keepalive.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--leases", type=int, default=10_000, help="leases granted and kept alive (default 10000)")
    ap.add_argument("--ttl", type=int, default=120, help="their TTL in seconds (default 120)")
    ap.add_argument("--grant-concurrency", type=int, default=64, help="grants in flight (default 64)")
    ap.add_argument("--streams", type=int, default=4, help="LeaseKeepAlive streams (default 4)")
    ap.add_argument("--window", type=int, default=64, help="unanswered keep-alives per stream at most (default 64)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of keep-alives (default 10)")
    add_common_arguments(ap)
    args = ap.parse_args(argv)
    check_systems(ap, args)
    if min(args.leases, args.ttl, args.grant_concurrency, args.streams, args.window, args.duration) <= 0:
        ap.error("--leases, --ttl, --grant-concurrency, --streams, --window and --duration must be positive")
    if args.streams > args.leases:
        ap.error("--streams must not exceed --leases")
    return args


def grant_all(stub: rpc_grpc.LeaseStub, n: int, ttl: int, concurrency: int) -> tuple[list[int], dict[str, Any]]:
    """Grant n leases, concurrency calls in flight: their IDs and the
    figures (grants/s, latency, errors). RuntimeError if any failed."""
    slots = threading.BoundedSemaphore(concurrency)
    lock = threading.Lock()
    ids: list[int] = []
    errors: list[str] = []
    latency = Histogram()

    def done(future: grpc.Future, sent_ns: int) -> None:
        now = time.monotonic_ns()
        with lock:
            if future.exception() is None:
                ids.append(future.result().ID)
                latency.add((now - sent_ns) / 1000.0)
            else:
                errors.append(str(future.exception())[:200])
        slots.release()

    start = time.monotonic()
    for _ in range(n):
        slots.acquire()
        sent = time.monotonic_ns()
        future = stub.LeaseGrant.future(rpc.LeaseGrantRequest(TTL=ttl), timeout=30.0)
        future.add_done_callback(lambda f, s=sent: done(f, s))
    for _ in range(concurrency):
        slots.acquire()
    took = time.monotonic() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} grants failed: {errors[0]}")
    return ids, {
        "grants": len(ids),
        "grant_seconds": took,
        "grants_per_s": len(ids) / took,
        "grant_p50_us": latency.percentile(50),
        "grant_p99_us": latency.percentile(99),
    }


class KeepAliveStream:
    """One LeaseKeepAlive stream renewing ids in turn until a deadline, at
    most window requests unanswered."""

    def __init__(self, stub: rpc_grpc.LeaseStub, ids: Sequence[int], window: int) -> None:
        self.stub = stub
        self.ids = list(ids)
        self.slots = threading.Semaphore(window)
        self.sent: collections.deque[tuple[int, int]] = collections.deque()  # (send ns, ID), in send order
        self.latency = Histogram()
        self.answers = 0
        self.expired = 0
        self.mismatched = 0
        self.error: str | None = None
        self.deadline = 0.0

    def _requests(self) -> Iterator[rpc.LeaseKeepAliveRequest]:
        i = 0
        while time.monotonic() < self.deadline:
            if not self.slots.acquire(timeout=0.05):
                continue
            lease = self.ids[i % len(self.ids)]
            i += 1
            self.sent.append((time.monotonic_ns(), lease))
            yield rpc.LeaseKeepAliveRequest(ID=lease)

    def run(self, duration: float) -> None:
        """Renew until duration has passed, then take the last answers."""
        self.deadline = time.monotonic() + duration
        call = self.stub.LeaseKeepAlive(self._requests(), timeout=duration + 30.0)
        try:
            for resp in call:
                now = time.monotonic_ns()
                sent_ns, lease = self.sent.popleft()
                self.latency.add((now - sent_ns) / 1000.0)
                self.answers += 1
                self.expired += resp.TTL <= 0
                self.mismatched += resp.ID != lease
                self.slots.release()
                if not self.sent and time.monotonic() >= self.deadline:
                    call.cancel()  # every answer is in; do not wait for the server to end the stream
                    break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{e.code().name}: {e.details()}"


def keep_alive(stub: rpc_grpc.LeaseStub, ids: Sequence[int], streams: int, window: int, duration: float) -> dict:
    """Renew every lease over streams streams for duration seconds; the figures."""
    workers = [KeepAliveStream(stub, ids[s::streams], window) for s in range(streams)]
    threads = [threading.Thread(target=w.run, args=(duration,), daemon=True) for w in workers]
    start, cpu = time.monotonic(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60.0)
    took = time.monotonic() - start
    cpu = time.process_time() - cpu
    latency = Histogram()
    for w in workers:
        latency.merge(w.latency)
    answers = sum(w.answers for w in workers)
    return {
        "keepalives": answers,
        "keepalive_seconds": took,
        "keepalives_per_s": answers / took,
        "client_cpu_fraction": cpu / took,
        "renewals_per_lease": answers / len(ids),
        "keepalive_p50_us": latency.percentile(50),
        "keepalive_p99_us": latency.percentile(99),
        "keepalive_max_us": latency.max if latency.count else None,
        "expired_answers": sum(w.expired for w in workers),
        "mismatched_answers": sum(w.mismatched for w in workers),
        "stream_errors": [w.error for w in workers if w.error],
    }


def measure(cluster: BenchCluster, system: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Grant, then keep alive, on one started cluster (NotServed when it
    does not serve Lease)."""
    channel = open_channel(cluster.grpc_address(args.target))
    try:
        probe_lease(channel, system)
        stub = rpc_grpc.LeaseStub(channel)
        ids, granted = grant_all(stub, args.leases, args.ttl, args.grant_concurrency)
        print(f"{system}: {granted['grants']:,} leases granted, {granted['grants_per_s']:,.0f}/s", flush=True)
        kept = keep_alive(stub, ids, args.streams, args.window, args.duration)
    finally:
        channel.close()
    row = {"system": system, "target": args.target, "leases": args.leases, "streams": args.streams} | granted | kept
    print(f"{system}: {format_line(row)}", flush=True)
    return [row]


def format_line(r: Mapping[str, Any]) -> str:
    return (
        f"{r['keepalives_per_s']:,.0f} keep-alives/s, p50 {fmt_ms(r['keepalive_p50_us'])} ms, "
        f"p99 {fmt_ms(r['keepalive_p99_us'])} ms"
    )


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a markdown table, then a line per problem."""
    header = [
        "system", "leases", "streams", "on", "grants/s", "grant p99 ms", "keep-alives/s",
        "keep-alive p50 ms", "keep-alive p99 ms", "renewals per lease", "client CPU",
    ]  # fmt: skip
    out, notes = [], []
    for r in rows:
        if "skipped" in r:
            out.append([r["system"], "-", "-", "-", "skipped", "-", "-", "-", "-", "-", "-"])
            notes.append(f"{r['system']}: {r['skipped']}")
            continue
        out.append([
            r["system"], f"{r['leases']:,}", str(r["streams"]), r["target"], f"{r['grants_per_s']:,.0f}",
            fmt_ms(r["grant_p99_us"]), f"{r['keepalives_per_s']:,.0f}", fmt_ms(r["keepalive_p50_us"]),
            fmt_ms(r["keepalive_p99_us"]), f"{r['renewals_per_lease']:.1f}", f"{r['client_cpu_fraction']:.0%}",
        ])  # fmt: skip
        if r["expired_answers"]:
            notes.append(f"{r['system']}: {r['expired_answers']} keep-alives answered TTL <= 0 (lease not found)")
        if r["mismatched_answers"]:
            notes.append(f"{r['system']}: {r['mismatched_answers']} answers named another lease than their request")
        if r["stream_errors"]:
            notes.append(f"{r['system']}: stream errors {r['stream_errors'][:2]}")
    table = markdown_table(header, out, right=[False, True, True, False] + [True] * 7)
    return "\n".join([table, *(f"- {n}" for n in notes)])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(NAME, args, measure, format_table)
