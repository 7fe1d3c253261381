# test-case-name: tests.test_bench_scripts
"""Watch fan-out, dkv against etcd (``python benchmarks/watch_fanout.py``;
its help is this docstring).

    python benchmarks/watch_fanout.py                          # 1, 100, 1000 watchers; dkv then etcd
    python benchmarks/watch_fanout.py --watchers 10,100 --duration 3 --systems etcd
    python benchmarks/watch_fanout.py --target follower        # watchers on a follower

For each system in turn a fresh 3-member cluster is started (etcd by
``dkv.testing.etcd_cluster``, dkv by ``dkv.testing.cluster``). For each
watcher count W, W watchers of one new prefix are created over gRPC
(``etcdserverpb.Watch``, the stubs of ``dkv.pb``) on the leader or on a
follower (``--target``); then one writer puts ``--rate`` new keys per
second (default 1,000) under the prefix for ``--duration`` seconds
through ``KV.Put`` to the leader, open loop (a put is sent when due, at
most ``--in-flight`` unanswered), each value starting with the put's send
time (``time.monotonic_ns``, one clock for every process on the machine).
The watchers then get until every acknowledged put has reached every
watcher, or ``--drain`` seconds, and the run stops.

How watchers share streams: ``--per-stream`` watchers (default 100) share
one Watch stream, as etcd's Go client puts every watcher of one context
on one stream; the streams are spread over ``--procs`` receiving
processes (default 2; Python's GIL makes one process one core), each with
one gRPC channel (one HTTP/2 connection) and a thread per stream. The
writer runs in the main process.

Per watcher count it reports: the write rate achieved (acknowledged puts
per second over the writing time); events/s delivered (events received
by all watchers together, over the time from the first put to the last
event); the share of the expected events (acknowledged puts x watchers)
that arrived; p50/p99 delivery latency (event received - put sent: it
includes the put's own commit, whose p99 is shown beside it); and the
drain time (last event - last acknowledgement); and each receiving
process's CPU (seconds per second from its watchers' creation to the end:
near 1, that process was a bound). Every watcher's events are checked to
come in revision order, without repeats.

The receiving clients are Python: at 1,000 watchers under 1,000 writes/s
(a million events a second asked for) the clients, on the same cores as
the servers, are a bound; the same clients measure both systems.

A system that answers UNIMPLEMENTED to Watch is skipped with a line
saying so. The table (markdown) goes to stdout, every figure as JSON to
``--out`` (default ``benchmarks/results/watch_fanout.json``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from multiprocessing.synchronize import Event
from typing import Any

import grpc

from dkv.pb import etcd_rpc_pb2 as rpc
from dkv.pb import etcd_rpc_pb2_grpc as rpc_grpc
from etcdbench.grpc_streams import WatchStream, open_channel, prefix_end, probe_watch
from etcdbench.runs import BenchCluster
from etcdbench.sides import add_common_arguments, check_systems, run_main
from etcdbench.stats import Histogram, fmt_ms, markdown_table

NAME = "watch_fanout"
#: Seconds allowed for every watcher of a run to be created.
_CREATE_TIMEOUT = 60.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="watch_fanout.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--watchers", default="1,100,1000", help="comma-separated watcher counts (default 1,100,1000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="puts per second asked for (default 1000)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of writing per watcher count (default 10)")
    ap.add_argument("--per-stream", type=int, default=100, help="watchers sharing one Watch stream (default 100)")
    ap.add_argument("--procs", type=int, default=2, help="receiving processes at most (default 2)")
    ap.add_argument("--value-size", type=int, default=256, help="value bytes, at least 8 (default 256)")
    ap.add_argument("--in-flight", type=int, default=512, help="unanswered puts at most (default 512)")
    ap.add_argument("--drain", type=float, default=60.0, help="seconds allowed for delivery after the last put")
    add_common_arguments(ap)
    args = ap.parse_args(argv)
    check_systems(ap, args)
    try:
        args.watcher_counts = [int(w) for w in args.watchers.split(",") if w.strip()]
    except ValueError:
        ap.error(f"--watchers takes comma-separated counts, not {args.watchers!r}")
    if not args.watcher_counts or min(args.watcher_counts) < 1:
        ap.error("--watchers takes counts of at least 1")
    if min(args.rate, args.duration, args.per_stream, args.procs, args.in_flight) <= 0 or args.drain < 0:
        ap.error("--rate, --duration, --per-stream, --procs and --in-flight must be positive, --drain not negative")
    if args.value_size < 8:
        ap.error("--value-size must be at least 8 (the send time)")
    return args


def plan_streams(watchers: int, per_stream: int, procs: int) -> list[list[int]]:
    """Watchers per stream, per receiving process: streams of per_stream
    watchers (the last one the remainder), dealt round-robin over at most
    procs processes (no process without a stream)."""
    sizes = [per_stream] * (watchers // per_stream) + ([watchers % per_stream] if watchers % per_stream else [])
    plan: list[list[int]] = [[] for _ in range(min(procs, len(sizes)))]
    for i, size in enumerate(sizes):
        plan[i % len(plan)].append(size)
    return plan


class _StreamTally:
    """What one stream's reader saw: events, their delivery latencies (µs),
    first and last receive times, per watcher its count and last revision,
    order violations, and watchers created or cancelled."""

    def __init__(self) -> None:
        self.events = 0
        self.latency = Histogram()
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.watchers: dict[int, list[int]] = {}  # watch_id -> [events, last revision]
        self.out_of_order = 0
        self.created = 0
        self.canceled = 0
        self.error: str | None = None

    def take(self, resp: rpc.WatchResponse, now_ns: int) -> None:
        if resp.created:
            self.created += 1
            self.watchers.setdefault(resp.watch_id, [0, 0])
        if resp.canceled:
            self.canceled += 1
        if not resp.events:
            return
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns
        w = self.watchers.setdefault(resp.watch_id, [0, 0])
        for ev in resp.events:
            rev = ev.kv.mod_revision
            if rev <= w[1]:
                self.out_of_order += 1
            w[1] = rev
            self.latency.add((now_ns - int.from_bytes(ev.kv.value[:8], "big")) / 1000.0)
        w[0] += len(resp.events)
        self.events += len(resp.events)


def _read(stream: WatchStream, tally: _StreamTally) -> None:
    try:
        for resp in stream.responses():
            tally.take(resp, time.monotonic_ns())
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            tally.error = f"{e.code().name}: {e.details()}"


def receive(
    index: int,
    address: str,
    prefix: bytes,
    sizes: Sequence[int],
    ready: Any,
    stop: Event,
    progress: Any,
    results: Any,
) -> None:
    """One receiving process: a channel to address, a stream per entry of
    sizes with that many watchers of prefix. Puts ``(index, created,
    error)`` on ready once every watcher is created (or it gave up), keeps
    progress[index] at its event count until stop is set, then puts its
    figures (``_StreamTally`` summed) on results."""
    channel = open_channel(address)
    streams = [WatchStream(channel) for _ in sizes]
    tallies = [_StreamTally() for _ in sizes]
    readers = [threading.Thread(target=_read, args=st, daemon=True) for st in zip(streams, tallies, strict=True)]
    for t in readers:
        t.start()
    end = prefix_end(prefix)
    for stream, size in zip(streams, sizes, strict=True):
        for _ in range(size):
            stream.create(prefix, end)
    deadline = time.monotonic() + _CREATE_TIMEOUT
    while sum(t.created for t in tallies) < sum(sizes) and time.monotonic() < deadline:
        if any(t.error for t in tallies):
            break
        time.sleep(0.01)
    error = next((t.error for t in tallies if t.error), None)
    ready.put((index, sum(t.created for t in tallies), error))
    cpu, wall = time.process_time(), time.monotonic()
    while not stop.wait(0.05):
        progress[index] = sum(t.events for t in tallies)
    for s in streams:
        s.close()
    for t in readers:
        t.join(5.0)
    channel.close()
    results.put(summed_tallies(tallies) | {"cpu_fraction": (time.process_time() - cpu) / (time.monotonic() - wall)})


def summed_tallies(tallies: Sequence[_StreamTally]) -> dict[str, Any]:
    """Several streams' tallies as one picklable dict."""
    latency = Histogram()
    for t in tallies:
        latency.merge(t.latency)
    firsts = [t.first_ns for t in tallies if t.first_ns is not None]
    lasts = [t.last_ns for t in tallies if t.last_ns is not None]
    return {
        "events": sum(t.events for t in tallies),
        "latency": latency.as_dict(),
        "first_ns": min(firsts) if firsts else None,
        "last_ns": max(lasts) if lasts else None,
        "per_watcher": [w[0] for t in tallies for w in t.watchers.values()],
        "out_of_order": sum(t.out_of_order for t in tallies),
        "created": sum(t.created for t in tallies),
        "canceled": sum(t.canceled for t in tallies),
        "errors": [t.error for t in tallies if t.error],
    }


class Writer:
    """Puts at a steady rate to one member, open loop: put i is sent at
    start + i / rate (late when more than in_flight are unanswered), its
    value the send time (8 bytes, big-endian ns) and padding."""

    def __init__(self, address: str, prefix: bytes, value_size: int, in_flight: int) -> None:
        self.channel = open_channel(address)
        self.stub = rpc_grpc.KVStub(self.channel)
        self.prefix = prefix
        self.padding = os.urandom(value_size - 8)
        self.slots = threading.BoundedSemaphore(in_flight)
        self.in_flight = in_flight
        self.lock = threading.Lock()
        self.acked = 0
        self.errors: list[str] = []
        self.ack_latency = Histogram()
        self.last_ack_ns = 0

    def _done(self, future: grpc.Future, sent_ns: int) -> None:
        now = time.monotonic_ns()
        with self.lock:
            if future.exception() is None:
                self.acked += 1
                self.ack_latency.add((now - sent_ns) / 1000.0)
                self.last_ack_ns = max(self.last_ack_ns, now)
            else:
                self.errors.append(str(future.exception())[:200])
        self.slots.release()

    def run(self, rate: float, duration: float) -> dict[str, Any]:
        """Send rate x duration puts and wait for their answers."""
        n = max(1, round(rate * duration))
        start = time.monotonic_ns()
        step = 1e9 / rate
        for i in range(n):
            delay = (start + i * step - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            self.slots.acquire()
            sent = time.monotonic_ns()
            req = rpc.PutRequest(key=self.prefix + i.to_bytes(8, "big"), value=sent.to_bytes(8, "big") + self.padding)
            future = self.stub.Put.future(req, timeout=30.0)
            future.add_done_callback(lambda f, s=sent: self._done(f, s))
        last_sent = time.monotonic_ns()
        for _ in range(self.in_flight):  # every answer is in when every slot is free again
            self.slots.acquire()
        self.channel.close()
        return {
            "puts": n,
            "acked": self.acked,
            "put_errors": self.errors[:5],
            "put_error_count": len(self.errors),
            "start_ns": start,
            "sent_seconds": (last_sent - start) / 1e9,
            "last_ack_ns": self.last_ack_ns,
            "writes_per_s": self.acked / max((self.last_ack_ns - start) / 1e9, 1e-9),
            "put_latency": self.ack_latency.as_dict(),
        }


def _get(q: Any, timeout: float, what: str) -> Any:
    """The next item of a multiprocessing queue; RuntimeError after timeout
    (a receiving process died or hangs)."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"gave up waiting {timeout:.0f}s for {what}") from None


def run_fanout(address: str, write_address: str, watchers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One watcher count: create the watchers, write, wait for delivery."""
    prefix = f"fanout/{watchers}/{uuid.uuid4().hex[:8]}/".encode()
    plan = plan_streams(watchers, args.per_stream, args.procs)
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    stop = ctx.Event()
    progress = ctx.Array("q", len(plan), lock=False)
    procs = [
        ctx.Process(target=receive, args=(i, address, prefix, sizes, ready, stop, progress, results), daemon=True)
        for i, sizes in enumerate(plan)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            index, created, error = _get(ready, _CREATE_TIMEOUT + 30, "a receiver to create its watchers")
            if error or created != sum(plan[index]):
                raise RuntimeError(f"receiver {index} created {created} of {sum(plan[index])} watchers: {error}")
        written = Writer(write_address, prefix, args.value_size, args.in_flight).run(args.rate, args.duration)
        expected = written["acked"] * watchers
        deadline = time.monotonic() + args.drain
        while sum(progress) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        parts = [_get(results, 60, "a receiver's figures") for _ in procs]
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    return fanout_figures(watchers, plan, written, parts)


def fanout_figures(
    watchers: int, plan: Sequence[Sequence[int]], written: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The figures of one run from the writer's and the receivers' results."""
    latency = Histogram()
    for part in parts:
        latency.merge(Histogram.from_dict(part["latency"]))
    put_latency = Histogram.from_dict(written["put_latency"])
    events = sum(p["events"] for p in parts)
    lasts = [p["last_ns"] for p in parts if p["last_ns"] is not None]
    last_ns = max(lasts) if lasts else None
    per_watcher = [n for p in parts for n in p["per_watcher"]]
    expected = written["acked"] * watchers
    return {
        "watchers": watchers,
        "streams": sum(len(s) for s in plan),
        "procs": len(plan),
        "puts": written["puts"],
        "acked": written["acked"],
        "put_error_count": written["put_error_count"],
        "put_errors": written["put_errors"],
        "writes_per_s": written["writes_per_s"],
        "events": events,
        "expected_events": expected,
        "delivered_fraction": events / expected if expected else 0.0,
        "events_per_s": events / ((last_ns - written["start_ns"]) / 1e9) if last_ns else 0.0,
        "latency_p50_us": latency.percentile(50),
        "latency_p99_us": latency.percentile(99),
        "latency_max_us": latency.max if latency.count else None,
        "put_p50_us": put_latency.percentile(50),
        "put_p99_us": put_latency.percentile(99),
        "drain_s": (last_ns - written["last_ack_ns"]) / 1e9 if last_ns else None,
        "watchers_complete": sum(1 for n in per_watcher if n >= written["acked"]),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "canceled": sum(p["canceled"] for p in parts),
        "stream_errors": [e for p in parts for e in p["errors"]],
        "receiver_cpu_fraction": [p.get("cpu_fraction", 0.0) for p in parts],
    }


def measure(cluster: BenchCluster, system: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every watcher count on one started cluster (NotServed when it does
    not serve Watch)."""
    address = cluster.grpc_address(args.target)
    leader = cluster.grpc_address("leader")
    channel = open_channel(address)
    try:
        probe_watch(channel, system)
    finally:
        channel.close()
    rows = []
    for w in args.watcher_counts:
        r = run_fanout(address, leader, w, args)
        r.update(system=system, target=args.target)
        rows.append(r)
        print(f"{system} {w:>5} watchers: {format_line(r)}", flush=True)
    return rows


def format_line(r: Mapping[str, Any]) -> str:
    """One run in a line, for the progress output."""
    return (
        f"{r['writes_per_s']:,.0f} writes/s, {r['events_per_s']:,.0f} events/s, "
        f"{r['delivered_fraction']:.1%} delivered, p50 {fmt_ms(r['latency_p50_us'])} ms, "
        f"p99 {fmt_ms(r['latency_p99_us'])} ms"
    )


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a markdown table, then a line per run with problems."""
    header = [
        "system", "watchers", "streams/procs", "on", "writes/s", "events/s", "delivered",
        "p50 ms", "p99 ms", "put p99 ms", "drain s", "receiver CPU",
    ]  # fmt: skip
    out, notes = [], []
    for r in rows:
        if "skipped" in r:
            out.append([r["system"], "-", "-", "-", "-", "skipped", "-", "-", "-", "-", "-", "-"])
            notes.append(f"{r['system']}: {r['skipped']}")
            continue
        drain = "-" if r["drain_s"] is None else f"{max(r['drain_s'], 0.0):.1f}"
        out.append([
            r["system"], f"{r['watchers']:,}", f"{r['streams']}/{r['procs']}", r["target"],
            f"{r['writes_per_s']:,.0f}", f"{r['events_per_s']:,.0f}", f"{r['delivered_fraction']:.1%}",
            fmt_ms(r["latency_p50_us"]), fmt_ms(r["latency_p99_us"]), fmt_ms(r["put_p99_us"]), drain,
            " ".join(f"{c:.0%}" for c in r["receiver_cpu_fraction"]),
        ])  # fmt: skip
        problems = []
        if r["put_error_count"]:
            problems.append(f"{r['put_error_count']} puts failed ({r['put_errors'][0]})")
        if r["out_of_order"]:
            problems.append(f"{r['out_of_order']} events out of revision order")
        if r["canceled"] or r["stream_errors"]:
            problems.append(f"{r['canceled']} watchers cancelled, stream errors {r['stream_errors'][:2]}")
        if r["watchers_complete"] < r["watchers"]:
            problems.append(f"{r['watchers'] - r['watchers_complete']} watchers missed events within the drain time")
        notes += [f"{r['system']} {r['watchers']} watchers: {p}" for p in problems]
    table = markdown_table(header, out, right=[False, True, True, False] + [True] * 8)
    return "\n".join([table, *(f"- {n}" for n in notes)])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(NAME, args, measure, format_table)
