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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def status(rest: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{rest}/v0/status", timeout=1) as r:
            return json.load(r)
    except OSError:
        return None


@contextmanager
def local_cluster(size: int = 3):
    """Start ``size`` nodes; yield {id: rest address}, with the leader known."""
    tmp = Path(tempfile.mkdtemp(prefix="dkv-bench-"))
    ports = free_ports(2 * size)
    ids = "abcdefg"[:size]
    cluster = ",".join(f"{i}@127.0.0.1:{ports[2 * n]}" for n, i in enumerate(ids))
    procs = []
    try:
        for n, node in enumerate(ids):
            env = dict(
                os.environ,
                DKV_NODE_ID=node,
                DKV_RPC_PORT=str(ports[2 * n]),
                DKV_REST_PORT=str(ports[2 * n + 1]),
                DKV_DB_PATH=str(tmp / f"{node}.db"),
                DKV_CLUSTER=cluster,
                DKV_LOG_LEVEL="warn",
            )
            log = open(tmp / f"{node}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dkv.cli"], env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        rests = {node: f"127.0.0.1:{ports[2 * n + 1]}" for n, node in enumerate(ids)}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sts = [status(r) for r in rests.values()]
            if all(sts) and all(s["leader_id"] and s["applied_index"] >= 2 for s in sts):
                yield rests, procs
                return
            time.sleep(0.1)
        raise SystemExit(f"cluster did not come up; logs in {tmp}")
    finally:
        for p in procs:
            with_suppress(lambda p=p: os.killpg(p.pid, signal.SIGTERM))
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with_suppress(lambda p=p: os.killpg(p.pid, signal.SIGKILL))
        shutil.rmtree(tmp, ignore_errors=True)


def with_suppress(fn) -> None:
    try:
        fn()
    except OSError:
        pass


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
    with local_cluster() as (rests, _):
        return bench(rests)


if __name__ == "__main__":
    sys.exit(main())
