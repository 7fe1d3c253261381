"""Watch delivery under a write load, dkv beside etcd.

    python benchmarks/watch_bench.py --watchers 1,100,1000 --rate 1000 --duration 10
    python benchmarks/watch_bench.py --systems dkv --watchers 100

For each system (a fresh 3-member cluster: dkv's ``Cluster.for_benchmark``,
or a real etcd 3.4) and each watcher count W: W gRPC Watch streams on one
member that is not the leader (spread over a few channels), each watching
the prefix ``bench/``; one writer puts ``--rate`` keys per second through the
leader for ``--duration`` seconds, each value the time it was sent. Prints,
per run, the writes made and their p50 latency, the events delivered per second (all watchers
together; every watcher should see every write), whether every watcher saw
every write, and the p50/p99 delivery latency (send to receipt, over the
events of up to 10 sampled watchers).

Client and servers share this machine: at high W the client (Python,
parsing every answer) may be what limits; the numbers say what one box does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dkv

from dkv.pb import etcd_rpc_pb2 as pb  # noqa: E402 - after the path is set
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc  # noqa: E402
from dkv.testing.cluster import Cluster  # noqa: E402
from dkv.testing.etcd_cluster import EtcdCluster, etcd_binary  # noqa: E402

PREFIX = b"bench/"
STAMP = struct.Struct(">d")
SAMPLED = 10
CHANNELS = 8


def identity(data: bytes) -> bytes:
    return data


class Watchers:
    def __init__(self, count: int) -> None:
        self.count = count
        self.events = [0] * count
        self.latencies: list[float] = []
        self.created = 0
        self.created_all = asyncio.Event()

    async def run(self, channel: aio.Channel, index: int) -> None:
        call = channel.stream_stream("/etcdserverpb.Watch/Watch", identity, identity)()
        create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=PREFIX, range_end=b"bench0"))
        await call.write(create.SerializeToString())
        sampled = index < SAMPLED
        async for raw in call:
            response = pb.WatchResponse.FromString(raw)
            if response.created:
                self.created += 1
                if self.created == self.count:
                    self.created_all.set()
                continue
            self.events[index] += len(response.events)
            if sampled:
                now = time.time()
                self.latencies.extend(now - STAMP.unpack_from(e.kv.value)[0] for e in response.events)


async def write(address: str, rate: int, duration: float, put_latencies: list[float]) -> int:
    async with aio.insecure_channel(address) as channel:
        kv = pb_grpc.KVStub(channel)

        async def put(n: int) -> None:
            began = time.time()
            await kv.Put(pb.PutRequest(key=PREFIX + b"%08d" % n, value=STAMP.pack(began)))
            put_latencies.append(time.time() - began)

        start = time.monotonic()
        sent = 0
        pending: set[asyncio.Future[Any]] = set()
        while (elapsed := time.monotonic() - start) < duration:
            due = int(elapsed * rate) + 1
            while sent < due:
                pending.add(asyncio.ensure_future(put(sent)))
                sent += 1
            done = {f for f in pending if f.done()}
            for f in done:
                f.result()
            pending -= done
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
        return sent


async def one_run(watch_at: str, write_at: str, count: int, rate: int, duration: float) -> dict[str, Any]:
    channels = [aio.insecure_channel(watch_at) for _ in range(min(CHANNELS, count))]
    watchers = Watchers(count)
    tasks = [asyncio.ensure_future(watchers.run(channels[i % len(channels)], i)) for i in range(count)]
    try:
        await asyncio.wait_for(watchers.created_all.wait(), 60)
        began = time.monotonic()
        put_latencies: list[float] = []
        written = await write(write_at, rate, duration, put_latencies)
        deadline = time.monotonic() + 30
        while min(watchers.events) < written and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        took = time.monotonic() - began
    finally:
        for task in tasks:
            task.cancel()
        for channel in channels:
            await channel.close()
    lat = sorted(watchers.latencies)
    puts = sorted(put_latencies)
    return {
        "put_p50_ms": 1000 * statistics.median(puts),
        "watchers": count,
        "writes": written,
        "events_per_s": sum(watchers.events) / took,
        "complete": min(watchers.events) == written,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
    }


def dkv_addresses() -> tuple[Cluster, str, str]:
    cluster = Cluster.for_benchmark()
    cluster.start()
    leader = cluster.wait_settled(timeout=30)
    follower = next(i for i in cluster.ids if i != leader)
    return cluster, f"127.0.0.1:{cluster.rpc_ports[follower]}", f"127.0.0.1:{cluster.rpc_ports[leader]}"


def etcd_addresses() -> tuple[EtcdCluster, str, str]:
    etcd = EtcdCluster()
    etcd.start()
    api = etcd.endpoints()
    leader = api.leader()
    follower = next(i for i in range(len(api.grpc_addresses)) if i != leader)
    return etcd, api.grpc_addresses[follower], api.grpc_addresses[leader]


async def all_runs(args: argparse.Namespace) -> None:
    """Every run in one event loop (grpc.aio keeps its state per loop)."""
    for system in args.systems.split(","):
        if system == "etcd" and etcd_binary() is None:
            print("etcd: not installed, skipped")
            continue
        for count in (int(c) for c in args.watchers.split(",")):
            cluster, watch_at, write_at = dkv_addresses() if system == "dkv" else etcd_addresses()
            try:
                r = await one_run(watch_at, write_at, count, args.rate, args.duration)
            finally:
                cluster.close()
            print(
                f"{system:<6} {r['watchers']:>8} {r['writes']:>7} {r['put_p50_ms']:>7.1f} {r['events_per_s']:>10.0f} "
                f"{'yes' if r['complete'] else 'NO':>8} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}",
                flush=True,
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="dkv,etcd", help="dkv, etcd or both (comma-separated)")
    parser.add_argument("--watchers", default="1,100,1000", help="watcher counts, comma-separated")
    parser.add_argument("--rate", type=int, default=1000, help="writes per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of writing per run")
    args = parser.parse_args()

    print(
        f"{'system':<6} {'watchers':>8} {'writes':>7} {'put p50':>7} {'events/s':>10} {'all seen':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    asyncio.run(all_runs(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
