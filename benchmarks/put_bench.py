"""Write throughput and latency of a 3-node dkv cluster.

    python benchmarks/put_bench.py --keys 20000 --clients 64
    python benchmarks/put_bench.py --endpoints 127.0.0.1:7071,127.0.0.1:8081 --keys 5000

Without --endpoints it starts a fresh 3-node cluster on free loopback ports
in a temporary directory (and stops it afterwards). C clients, each on its own
keep-alive HTTP/1.1 connection, put N distinct keys (8-byte keys, 256-byte
values by default) as fast as they can, to the leader (``--target leader``)
or spread over all nodes (``--target all``). Prints writes/s, p50 and p99, and
exits non-zero if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dkv

from dkv.testing.cluster import Cluster  # noqa: E402 - after the path is set
from dkv.testing.poll import Timeout  # noqa: E402


def status(rest: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{rest}/v0/status", timeout=1) as r:
            return json.load(r)
    except OSError:
        return None


@contextmanager
def local_cluster(size: int = 3) -> Iterator[dict[str, str]]:
    """Start ``size`` nodes (``dkv.testing.cluster``, as a user runs them);
    yield {id: rest address} once they have settled under one leader."""
    with Cluster.for_benchmark(ids="abcdefg"[:size]) as cluster:
        cluster.start()
        try:
            cluster.wait_settled(timeout=30)
        except Timeout:
            raise SystemExit(f"cluster did not come up:\n{cluster.logs_report(10)}") from None
        yield {node: f"127.0.0.1:{port}" for node, port in cluster.rest_ports.items()}


async def client(address: str, requests: list[bytes], latencies: list[float], errors: list[str]) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for body in requests:
            head = (
                f"POST /v0/kv HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if b" 200 " not in status_line:
                errors.append(f"{status_line.decode().strip()} {payload[:100]!r}")
    finally:
        writer.close()


def body(key: bytes, value: bytes) -> bytes:
    return json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}).encode()


async def run(targets: list[str], keys: int, clients: int, value_size: int) -> tuple[float, list[float], list[str]]:
    value = os.urandom(value_size // 2).hex().encode()[:value_size]
    per_client: list[list[bytes]] = [[] for _ in range(clients)]
    for i in range(keys):
        per_client[i % clients].append(body(b"%08d" % i, value))
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(
        *(client(targets[c % len(targets)], reqs, latencies, errors) for c, reqs in enumerate(per_client))
    )
    return time.perf_counter() - start, latencies, errors


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--target", choices=["leader", "all"], default="leader")
    ap.add_argument("--endpoints", help="REST addresses of an existing cluster (comma separated)")
    args = ap.parse_args()

    def bench(rests: dict[str, str]) -> int:
        leader = next(s["leader_id"] for s in map(status, rests.values()) if s)
        targets = [rests[leader]] if args.target == "leader" else list(rests.values())
        elapsed, lat, errors = asyncio.run(run(targets, args.keys, args.clients, args.value_size))
        lat.sort()
        print(
            f"{args.keys} puts, {args.clients} clients, {args.value_size}-byte values, target {args.target}: "
            f"{args.keys / elapsed:,.0f} writes/s, p50 {percentile(lat, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(lat, 0.99) * 1000:.1f} ms, errors {len(errors)}"
        )
        for e in errors[:5]:
            print("  error:", e)
        return 1 if errors else 0

    if args.endpoints:
        rests = {str(n): e for n, e in enumerate(args.endpoints.split(","))}
        by_id = {status(e)["id"]: e for e in rests.values()}  # type: ignore[index]
        return bench(by_id)
    with local_cluster() as rests:
        return bench(rests)


if __name__ == "__main__":
    sys.exit(main())
