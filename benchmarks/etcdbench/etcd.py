"""Three etcd members on this machine, as ``dkv.testing.etcd_cluster``
launches them for the compatibility tests: free loopback ports, a new
cluster in a temporary directory, default snapshot settings, warn-level
logs in files."""

from __future__ import annotations

from pathlib import Path

from dkv.testing.etcd_cluster import EtcdCluster as _EtcdMembers


class EtcdCluster(_EtcdMembers):
    """Three etcd members, e0..e2, each a ``Process`` in its own session."""

    system = "etcd"
    own_api = "v3"

    def __init__(self, etcd: str, base_dir: Path | None) -> None:
        super().__init__(etcd=etcd, parent=base_dir, prefix="vs-etcd-etcd-")

    def leader_url(self) -> str:
        name = self.leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return f"http://127.0.0.1:{self.client[name]}"


    def grpc_address(self, role: str) -> str:
        """host:port of the gRPC services of the leader (role "leader") or
        of a follower (role "follower")."""
        leader = self.leader_name()
        if leader is None:
            raise RuntimeError("etcd has no leader")
        name = leader if role == "leader" else next(n for n in self.names if n != leader)
        return f"127.0.0.1:{self.client[name]}"
