"""Start, inspect or stop a local 3-node dkv cluster (the README's example).

    python tools/local_cluster.py start    # nodes a, b, c on RPC/REST 7070/7071, 8080/8081, 9090/9091
    python tools/local_cluster.py status
    python tools/local_cluster.py stop

Data and logs live in ./.cluster/ (a.db, a.log, a.pid, ...). ``start`` runs
each node in the background with the ``dkv`` command next to this Python and
the README's ``DKV_*`` variables (each node's peer port is its RPC port + 2:
7072, 8082, 9092, the default native peer protocol), waits until the cluster has a leader, and
prints curl examples. Starting an already running cluster is a no-op;
``stop`` sends SIGTERM and waits. The nodes are launched by
``dkv.testing.launcher``, which ships with the package.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any

from dkv.testing.cluster import agreed_leader
from dkv.testing.launcher import NodeConfig, NodeProcess, dkv_command
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import terminate
from dkv.testing.rest_client import http_request

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


def _status(rest: int) -> dict[str, Any] | None:
    try:
        code, body = http_request(rest, "GET", "/v0/status", timeout=1)
    except (OSError, http.client.HTTPException):
        return None
    return body if code == 200 else None


def start() -> int:
    DATA.mkdir(exist_ok=True)
    started: list[NodeProcess] = []
    for node, rpc, rest in NODES:
        if _pid(node):
            continue
        config = NodeConfig(
            node_id=node, rpc_port=rpc, rest_port=rest, db_path=DATA / f"{node}.db", cluster=CLUSTER, log_level="info"
        )
        proc = NodeProcess.from_config(config, DATA / f"{node}.log", style="env", program=dkv_command())
        proc.start()
        started.append(proc)

    def leader() -> str | None:
        for proc in started:
            if not proc.alive:
                raise RuntimeError(f"node {proc.name} exited with status {proc.returncode}; see {proc.log_path}")
        return agreed_leader({node: _status(rest) for node, _, rest in NODES})

    try:
        lid = wait_until(leader, 30, "a leader", interval=0.2)
    except (Timeout, RuntimeError) as e:
        print(f"the cluster did not elect a leader within 30 s ({e}); see the logs in {DATA}", file=sys.stderr)
        return 1
    finally:
        for proc in started:  # they outlive this command; ``stop`` ends them
            if proc.alive:
                (DATA / f"{proc.name}.pid").write_text(str(proc.detach()))
    print(f"dkv cluster is up; leader: {lid}; data and logs in {DATA}")
    print("  curl -X POST localhost:7071/v0/kv -d '{\"key\":\"aGVsbG8=\",\"value\":\"d29ybGQ=\"}'")
    print("  curl localhost:9091/v0/kv/key/aGVsbG8=")
    print(f"  {sys.executable} {__file__} stop")
    return 0


def status() -> int:
    for node, _, rest in NODES:
        print(node, json.dumps(_status(rest)) if _pid(node) else "not running")
    return 0


def stop() -> int:
    pids = {node: _pid(node) for node, _, _ in NODES}
    terminate(pid for pid in pids.values() if pid)
    for node in pids:
        (DATA / f"{node}.pid").unlink(missing_ok=True)
    print("stopped")
    return 0


if __name__ == "__main__":
    commands = {"start": start, "status": status, "stop": stop}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} start|status|stop")
    sys.exit(commands[sys.argv[1]]())
