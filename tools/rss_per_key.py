"""How a node's memory grows per unique key written (a measurement, not a test).

    python tools/rss_per_key.py [--keys 200000] [--value-bytes 256] [--clients 8] [--every 50000] [--trace DIR]

Starts one node (``dkv.testing.cluster.Cluster``, a temp dir), writes
``--keys`` unique 8-byte keys with ``--value-bytes`` values through
``POST /v0/kv`` from ``--clients`` threads (keep-alive connections), and
every ``--every`` keys prints the node's VmRSS, RssAnon and RssFile
(``/proc/PID/status``) and its db file's size, then the growth per key
between the first and the last checkpoint. ``--trace`` runs the node with
``DKV_TRACEMALLOC=1`` (``dkv.memory_debug``), dumps at each checkpoint and
copies the dumps (``a.db.memory-*``) into DIR: they say which lines hold the memory (tracing costs
memory of its own, so the RSS figures of a traced run are not the ones to
quote).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until
from dkv.testing.soak_sampler import proc_memory


def _writer(port: int, keys: range, value: bytes, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body_value = base64.b64encode(value).decode()
    for n in keys:
        body = json.dumps({"key": base64.b64encode(n.to_bytes(8, "big")).decode(), "value": body_value})
        for _ in range(5):
            try:
                conn.request("POST", "/v0/kv", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    break
                errors.append(f"{response.status}")
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--value-bytes", type=int, default=256)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--every", type=int, default=50_000)
    p.add_argument("--trace", metavar="DIR", type=Path, help="trace the node; copy its dumps into DIR")
    p.add_argument("--node-arg", action="append", default=[], help="an extra flag for the node (repeatable)")
    a = p.parse_args()
    env = {"DKV_TRACEMALLOC": "1"} if a.trace else {}
    value = os.urandom(a.value_bytes)
    with Cluster(ids=["a"], env=env, extra_args=a.node_arg, proxy_links=False, log_level="warn") as c:
        c.start()
        c.wait_settled()
        node = c.node("a")
        port = c.rest_ports["a"]
        db = c.dir / "a.db"
        rows: list[tuple[int, dict[str, int], int]] = []

        def checkpoint(written: int) -> None:
            time.sleep(2.0)
            mem = proc_memory(node.pid)
            rows.append((written, mem, db.stat().st_size))
            rss, anon, file = (mem.get(name, 0) / 1024 for name in ("VmRSS", "RssAnon", "RssFile"))
            size = db.stat().st_size / 2**20
            print(
                f"{written:>8} keys: VmRSS {rss:7.1f} MiB  anon {anon:7.1f}  file {file:7.1f}  db {size:7.1f} MiB",
                flush=True,
            )
            if a.trace:
                dumps = len(list(c.dir.glob("a.db.memory-*.txt")))
                os.kill(node.pid, signal.SIGUSR2)
                wait_until(lambda: len(list(c.dir.glob("a.db.memory-*.txt"))) > dumps, 120.0, "the memory dump")

        checkpoint(0)
        errors: list[str] = []
        started = time.monotonic()
        for lo in range(0, a.keys, a.every):
            hi = min(a.keys, lo + a.every)
            threads = [
                threading.Thread(target=_writer, args=(port, range(lo + i, hi, a.clients), value, errors))
                for i in range(a.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            checkpoint(hi)
        seconds = time.monotonic() - started
        (k0, m0, d0), (k1, m1, d1) = rows[0], rows[-1]
        keys = max(1, k1 - k0)
        print(f"{keys} keys in {seconds:.0f}s ({keys / seconds:.0f}/s), {len(errors)} retried errors")
        for name in ("VmRSS", "RssAnon", "RssFile"):
            print(f"{name}: {(m1.get(name, 0) - m0.get(name, 0)) * 1024 / keys:.0f} bytes per key")
        print(f"db file: {(d1 - d0) / keys:.0f} bytes per key")
        if a.trace:
            a.trace.mkdir(parents=True, exist_ok=True)
            for dump in sorted(Path(c.dir).glob("a.db.memory-*.txt")):
                shutil.copy(dump, a.trace / dump.name)
                print("dump:", a.trace / dump.name)


if __name__ == "__main__":
    main()
