"""Leader CPU per REST request: microseconds of the node's CPU time for each
``POST /v0/kv`` (also with an ``Idempotency-Key``: the cost of exactly-once
writes) and ``GET /v0/kv/key/...`` (serializable and linearizable), and the
same through etcd's JSON gateway (``POST /v3/kv/put``, linearizable
``POST /v3/kv/range``).

    python benchmarks/http_cpu.py                       # 20,000 requests per phase
    python benchmarks/http_cpu.py --requests 5000 --repeat 3
    python benchmarks/http_cpu.py --tree /tmp/dkv-old   # the node runs that checkout's dkv

It starts one single-node dkv (REST on a free port, db in a temporary
directory), drives each phase from this process over raw keep-alive sockets
(``--connections`` connections, each with ``--window`` pipelined requests in
flight), and reads the node's user+system CPU time from ``/proc/PID/stat``
before and after the phase. The figure is that CPU time divided by the
requests of the phase; the client's own CPU is not counted. Every answer
must be a 200, or the run fails. The node is killed at the end, whatever
happens.
"""

from __future__ import annotations

import argparse
import base64
import json
import selectors
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from etcdbench.cost import cpu_seconds  # beside this file

from dkv.testing.cluster import NodeProcess, free_node_ports, wait_until


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(key: bytes, value: bytes, idempotency_key: bytes | None = None) -> bytes:
    body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
    extra = b"Idempotency-Key: %s\r\n" % idempotency_key if idempotency_key is not None else b""
    return (
        b"POST /v0/kv HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra, len(body), body)
    )


def gateway(path: bytes, fields: dict[str, str]) -> bytes:
    """A POST to etcd's JSON gateway path with fields as its body."""
    body = json.dumps(fields).encode()
    return b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        path,
        len(body),
        body,
    )


def get(key: bytes, consistency: str | None) -> bytes:
    query = f"?consistency={consistency}".encode() if consistency else b""
    return b"GET /v0/kv/key/%s%s HTTP/1.1\r\nHost: bench\r\n\r\n" % (base64.urlsafe_b64encode(key), query)


def drive(port: int, requests: list[bytes], connections: int, window: int) -> float:
    """Send requests over connections (each with up to window in flight) and
    wait for every answer; the wall time it took. Fails on an answer that is
    not 200."""
    per_conn = [requests[i::connections] for i in range(connections)]
    sel = selectors.DefaultSelector()
    state = []
    for queue in per_conn:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        st = {"sock": s, "queue": queue, "next": 0, "answered": 0, "buf": b""}
        state.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    start = time.perf_counter()
    for st in state:
        _send_more(st, window)
    remaining = sum(len(q) for q in per_conn)
    deadline = time.monotonic() + 600
    while remaining:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out with {remaining} answers missing")
        for key, _ in sel.select(5):
            st = key.data
            data = st["sock"].recv(1 << 20)
            if not data:
                raise RuntimeError("the node closed a connection")
            n = _parse(st, data)
            remaining -= n
            if n:
                _send_more(st, window)
    elapsed = time.perf_counter() - start
    for st in state:
        sel.unregister(st["sock"])
        st["sock"].close()
    sel.close()
    return elapsed


def _send_more(st: dict, window: int) -> None:
    queue, i = st["queue"], st["next"]
    upto = min(len(queue), st["answered"] + window)
    if upto > i:
        st["sock"].setblocking(True)
        st["sock"].sendall(b"".join(queue[i:upto]))
        st["sock"].setblocking(False)
        st["next"] = upto


def _parse(st: dict, data: bytes) -> int:
    """Consume complete answers from the connection's buffer; how many."""
    buf = st["buf"] + data
    n = 0
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            break
        head = buf[:end]
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(buf) < end + 4 + length:
            break
        if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
            raise RuntimeError(f"unexpected answer: {buf[: end + 4 + length][:300]!r}")
        buf = buf[end + 4 + length :]
        n += 1
    st["buf"] = buf
    st["answered"] += n
    return n


def measure(pid: int, port: int, requests: list[bytes], connections: int, window: int) -> tuple[float, float]:
    """(µs of node CPU per request, requests per second) for one phase."""
    before = cpu_seconds(pid)
    elapsed = drive(port, requests, connections, window)
    used = cpu_seconds(pid) - before
    return used / len(requests) * 1e6, len(requests) / elapsed


def start_node(directory: Path, tree: str | None) -> NodeProcess:
    [(rpc, rest)] = free_node_ports(1)
    argv = [
        sys.executable, "-m", "dkv.cli",
        "--node-id", "a",
        "--cluster", f"a@127.0.0.1:{rpc}",
        "--rpc-port", str(rpc),
        "--rest-port", str(rest),
        "--db-path", str(directory / "a.db"),
        "--log-level", "warn",
        "--snapshot-entries", "1000000",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(Path(tree).resolve())} if tree else None
    node = NodeProcess(argv, directory / "node.log", env=env, cwd=directory, rest_port=rest, name="bench")
    node.start()
    node.wait_ready(30)
    wait_until(lambda: (st := node.try_status()) and st["role"] == "leader", 15, "the node to lead")
    return node


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="requests per phase")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--window", type=int, default=8, help="pipelined requests in flight per connection")
    p.add_argument("--repeat", type=int, default=1, help="runs of every phase (the median is reported)")
    p.add_argument("--tree", help="run the node from this checkout (its directory holding dkv/)")
    args = p.parse_args(argv)

    n = args.requests
    keys = [b"bench-%08d" % i for i in range(n)]
    value = bytes(range(64))
    phases: dict[str, Callable[[int], list[bytes]]] = {
        "POST /v0/kv": lambda run: [post(k, value + b"%d" % run) for k in keys],
        # The cost of exactly-once: every write carries a new Idempotency-Key.
        "POST + Idem-Key": lambda run: [post(k, value + b"%d" % run, b"op-%d-%s" % (run, k)) for k in keys],
        "GET serializable": lambda run: [get(k, "serializable") for k in keys],
        "GET linearizable": lambda run: [get(k, None) for k in keys],
        "POST /v3/kv/put": lambda run: [
            gateway(b"/v3/kv/put", {"key": b64(k), "value": b64(value + b"%d" % run)}) for k in keys
        ],
        "POST /v3/kv/range": lambda run: [gateway(b"/v3/kv/range", {"key": b64(k)}) for k in keys],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in phases}
    with tempfile.TemporaryDirectory(prefix="dkv-http-cpu-") as tmp:
        node = start_node(Path(tmp), args.tree)
        try:
            assert node.pid is not None and node.rest_port is not None
            warm_up = [post(b"warm-%d" % i, value) for i in range(2000)]
            drive(node.rest_port, warm_up, args.connections, args.window)
            for run in range(args.repeat):
                for name, make in phases.items():
                    results[name].append(measure(node.pid, node.rest_port, make(run), args.connections, args.window))
        finally:
            node.close()
    print(f"{n} requests per phase, {args.connections} connections x {args.window} in flight, {args.repeat} run(s)")
    for name, runs in results.items():
        us = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        every = " ".join(f"{r[0]:.1f}" for r in runs)
        print(f"  {name:18} {us:7.1f} µs CPU/request   {rate:8.0f} requests/s   (runs: {every})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
