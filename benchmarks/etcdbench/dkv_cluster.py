"""Three (or ``size``) dkv nodes as a user runs them (the node's default
timings, peers dialling each other directly, warn-level logs), launched by
``dkv.testing.cluster``; more may join."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dkv.config import DEFAULT_PEER_TRANSPORT
from dkv.testing.cluster import Cluster
from dkv.testing.poll import Timeout

#: Node ids, in order: the first ``size`` are the voters, the next the joiners.
NODE_IDS = "abcdefghijklmnopqrstuvwxyz"


class DkvCluster:
    """Nodes a, b, c (``size`` of them, in NODE_IDS order) on free ports in
    a temporary directory."""

    system = "dkv"
    own_api = "v0"

    def __init__(
        self,
        base_dir: Path | None,
        peer_transport: str = DEFAULT_PEER_TRANSPORT,
        size: int = 3,
        extra_args: Sequence[str] = (),
    ) -> None:
        """peer_transport: the nodes' --peer-transport; size: the voters (at
        most 25); extra_args: flags for every node, joined ones too."""
        if not 1 <= size < len(NODE_IDS):
            raise ValueError(f"a dkv cluster of {size} nodes: choose 1 to {len(NODE_IDS) - 1}")
        self.dir = Path(tempfile.mkdtemp(prefix="vs-etcd-dkv-", dir=base_dir))
        self.nodes = Cluster.for_benchmark(
            self.dir, tuple(NODE_IDS[:size]), peer_transport=peer_transport, extra_args=extra_args
        )
        self.voters = list(self.nodes.ids)
        #: Each node's RPC and REST port, joined nodes too.
        self.rpc = self.nodes.rpc_ports
        self.rest = self.nodes.rest_ports

    def __enter__(self) -> DkvCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 60.0) -> None:
        """Start the voters and wait until they agree on a leader and have
        applied its first entry."""
        try:
            self.nodes.start(timeout=timeout)
            self.nodes.wait_settled(timeout)
        except Timeout as e:
            raise RuntimeError(f"dkv did not come up: {e}\n{self.nodes.logs_report(5)}") from None

    def status(self, node: str) -> dict[str, Any] | None:
        """GET /v0/status of node, or None if it does not answer."""
        return self.nodes.node(node).try_status(timeout=1.0)

    def leader(self) -> str:
        """The leader's node id, as the first node that names one sees it."""
        for n in self.nodes.nodes:
            s = self.status(n)
            if s and s.get("leader_id") in self.rest:
                return str(s["leader_id"])
        raise RuntimeError("dkv has no leader")

    def pid(self, node: str) -> int:
        """The process id of a started node."""
        pid = self.nodes.node(node).pid
        if pid is None:
            raise RuntimeError(f"dkv node {node} was never started")
        return pid

    def member_pids(self) -> dict[str, int]:
        """The process id of every live node (joined ones too), by node id."""
        return {n: node.pid for n, node in self.nodes.nodes.items() if node.alive and node.pid is not None}

    def next_id(self) -> str:
        """The id of a node that has not been started yet (for a join)."""
        return next(n for n in NODE_IDS if n not in self.rest)

    def leader_member(self) -> str:
        """The leader's node id."""
        return self.leader()

    def follower_member(self) -> str:
        """A voter that is not the leader."""
        leader = self.leader()
        return next(n for n in self.voters if n != leader)

    def progress(self, node: str) -> tuple[int, int] | None:
        """(commit index, applied index) of node's Raft log, or None if it
        does not answer."""
        s = self.status(node)
        return None if s is None else (int(s["commit_index"]), int(s["applied_index"]))

    def pause(self, node: str) -> None:
        """SIGSTOP the node (it keeps its sockets)."""
        self.nodes.pause(node)

    def resume(self, node: str) -> None:
        """SIGCONT a paused node."""
        self.nodes.resume(node)

    def kill(self, node: str) -> None:
        """kill -9 the node and reap it."""
        self.nodes.kill(node)

    def restart(self, node: str) -> None:
        """Start a stopped node again on its db and ports; does not wait."""
        self.nodes.start_node(node, wait=False)

    def join(self, node: str, via: str) -> None:
        """Start a new node with an empty db that joins through member via;
        does not wait."""
        self.nodes.add_node(node, via, wait=False)

    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.rest[n]}" for n in self.voters]

    def leader_url(self) -> str:
        return f"http://127.0.0.1:{self.rest[self.leader()]}"

    def grpc_address(self, role: str) -> str:
        """host:port of the gRPC services (etcd's API, on the RPC port) of
        the leader (role "leader") or of a follower (role "follower")."""
        leader = self.leader()
        node = leader if role == "leader" else next(n for n in self.voters if n != leader)
        return f"127.0.0.1:{self.rpc[node]}"

    def close(self) -> None:
        """Kill every node and remove the data."""
        self.nodes.close()
        shutil.rmtree(self.dir, ignore_errors=True)
