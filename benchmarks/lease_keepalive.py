"""Lease keep-alives per second, dkv beside etcd, with many leases.

    python benchmarks/lease_keepalive.py                      # 10,000 leases, dkv and etcd
    python benchmarks/lease_keepalive.py --system dkv --leases 1000 --seconds 5

Starts a fresh 3-member cluster of each system (dkv as a user runs it:
``Cluster.for_benchmark``; etcd 3.4 from ``dkv.testing.etcd_cluster``),
grants ``--leases`` leases of TTL 600 s on the leader over gRPC, then runs
``--streams`` ``LeaseKeepAlive`` streams against the leader for
``--seconds``; each stream renews its share of the leases in turn, one
request in flight per stream (a keep-alive is answered before the next is
sent, as etcd's client does). Prints keep-alives/s and each answer's mean
latency; every answer must carry the lease's TTL (a 0 would mean the lease
was lost). Every process started is killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # this checkout's dkv

from grpc import aio  # noqa: E402

from dkv.pb import etcd_rpc_pb2 as pb  # noqa: E402
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc  # noqa: E402
from dkv.testing.cluster import Cluster  # noqa: E402
from dkv.testing.etcd_cluster import EtcdCluster, etcd_binary  # noqa: E402
from dkv.testing.process import close_all  # noqa: E402

TTL = 600


async def _grant_all(stub: pb_grpc.LeaseStub, count: int) -> list[int]:
    ids: list[int] = []
    batch = 200
    for start in range(0, count, batch):
        answers = await asyncio.gather(
            *(stub.LeaseGrant(pb.LeaseGrantRequest(TTL=TTL), timeout=30) for _ in range(min(batch, count - start)))
        )
        ids.extend(a.ID for a in answers)
    return ids


async def _stream(stub: pb_grpc.LeaseStub, ids: list[int], deadline: float) -> tuple[int, float]:
    call = stub.LeaseKeepAlive()
    done, waited = 0, 0.0
    while time.monotonic() < deadline:
        lease = ids[done % len(ids)]
        sent = time.monotonic()
        await call.write(pb.LeaseKeepAliveRequest(ID=lease))
        answer = await call.read()
        waited += time.monotonic() - sent
        if answer.TTL != TTL:
            raise SystemExit(f"lease {lease} answered TTL {answer.TTL}")
        done += 1
    await call.done_writing()
    return done, waited


async def measure(address: str, leases: int, streams: int, seconds: float) -> tuple[float, float]:
    """(keep-alives per second, mean latency in ms) against address."""
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LeaseStub(channel)
        ids = await _grant_all(stub, leases)
        shares = [ids[i::streams] for i in range(streams)]
        started = time.monotonic()
        results = await asyncio.gather(*(_stream(stub, s, started + seconds) for s in shares if s))
        elapsed = time.monotonic() - started
    total = sum(n for n, _ in results)
    waited = sum(w for _, w in results)
    return total / elapsed, 1000 * waited / max(total, 1)


def _dkv_leader_address() -> tuple[Cluster, str]:
    cluster = Cluster.for_benchmark()
    cluster.start()
    leader = cluster.wait_settled()
    return cluster, f"127.0.0.1:{cluster.rpc_ports[leader]}"


def _etcd_leader_address() -> tuple[EtcdCluster, str]:
    etcd = EtcdCluster()
    etcd.start()
    api = etcd.endpoints()
    leader = api.leader()
    return etcd, api.grpc_addresses[leader]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=("dkv", "etcd", "both"), default="both")
    parser.add_argument("--leases", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    systems = ["dkv", "etcd"] if args.system == "both" else [args.system]
    if "etcd" in systems and etcd_binary() is None:
        print("etcd is not installed: measuring dkv only", file=sys.stderr)
        systems.remove("etcd")
    print(f"{args.leases} leases, {args.streams} keep-alive streams, {args.seconds:g} s")
    print(f"{'system':8} {'keep-alives/s':>14} {'mean ms':>9}")
    try:
        for system in systems:
            owner, address = _dkv_leader_address() if system == "dkv" else _etcd_leader_address()
            try:
                rate, latency = asyncio.run(measure(address, args.leases, args.streams, args.seconds))
            finally:
                owner.close()
            print(f"{system:8} {rate:14.0f} {latency:9.2f}")
    finally:
        close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
