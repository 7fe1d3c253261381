"""Start, inspect or stop a local 3-node dkv cluster (the README's example).

    python tools/local_cluster.py start    # nodes a, b, c on 7070/7071, 8080/8081, 9090/9091
    python tools/local_cluster.py status
    python tools/local_cluster.py stop

Data and logs live in ./.cluster/ (a.db, a.log, a.pid, ...). ``start`` runs
each node in the background with the ``dkv`` command next to this Python,
waits until the cluster has a leader, and prints curl examples. Starting an
already running cluster is a no-op; ``stop`` sends SIGTERM and waits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

NODES = [("a", 7070, 7071), ("b", 8080, 8081), ("c", 9090, 9091)]
CLUSTER = ",".join(f"{n}@127.0.0.1:{rpc}" for n, rpc, _ in NODES)
DATA = Path.cwd() / ".cluster"


def _pid(node: str) -> int | None:
    try:
        pid = int((DATA / f"{node}.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _status(rest: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v0/status", timeout=1) as r:
            return json.load(r)
    except OSError:
        return None


def start() -> int:
    DATA.mkdir(exist_ok=True)
    dkv = Path(sys.executable).with_name("dkv")
    for node, rpc, rest in NODES:
        if _pid(node):
            continue
        env = dict(
            os.environ,
            DKV_NODE_ID=node,
            DKV_RPC_PORT=str(rpc),
            DKV_REST_PORT=str(rest),
            DKV_DB_PATH=str(DATA / f"{node}.db"),
            DKV_CLUSTER=CLUSTER,
            DKV_LOG_LEVEL="info",
        )
        with open(DATA / f"{node}.log", "ab") as log:
            proc = subprocess.Popen(
                [str(dkv)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        (DATA / f"{node}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = [_status(rest) for _, _, rest in NODES]
        leaders = {s["leader_id"] for s in statuses if s}
        if all(statuses) and len(leaders) == 1 and "" not in leaders:
            print(f"dkv cluster is up; leader: {leaders.pop()}; data and logs in {DATA}")
            print("  curl -X POST localhost:7071/v0/kv -d '{\"key\":\"aGVsbG8=\",\"value\":\"d29ybGQ=\"}'")
            print("  curl localhost:9091/v0/kv/key/aGVsbG8=")
            print(f"  {sys.executable} {__file__} stop")
            return 0
        time.sleep(0.2)
    print(f"the cluster did not elect a leader within 30 s; see the logs in {DATA}", file=sys.stderr)
    return 1


def status() -> int:
    for node, _, rest in NODES:
        print(node, json.dumps(_status(rest)) if _pid(node) else "not running")
    return 0


def stop() -> int:
    pids = {node: _pid(node) for node, _, _ in NODES}
    for pid in filter(None, pids.values()):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_pid(n) for n in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node, pid in pids.items():
        if _pid(node):
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        (DATA / f"{node}.pid").unlink(missing_ok=True)
    print("stopped")
    return 0


if __name__ == "__main__":
    commands = {"start": start, "status": status, "stop": stop}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} start|status|stop")
    sys.exit(commands[sys.argv[1]]())
