"""Three (or ``size``) etcd members on this machine, as ``dkv.testing.etcd_cluster``
launches them for the compatibility tests: free loopback ports, a new
cluster in a temporary directory, default snapshot settings, warn-level
logs in files."""

from __future__ import annotations

import http.client
from pathlib import Path

from dkv.testing.etcd_cluster import EtcdCluster as _EtcdMembers
from dkv.testing.etcd_cluster import gateway_request


class EtcdCluster(_EtcdMembers):
    """Three etcd members, e0..e2 (``size`` of them: e0..eN-1), each a
    ``Process`` in its own session."""

    system = "etcd"
    own_api = "v3"

    def __init__(self, etcd: str, base_dir: Path | None, size: int = 3) -> None:
        names = [f"e{i}" for i in range(size)]
        super().__init__(names=names, etcd=etcd, parent=base_dir, prefix="vs-etcd-etcd-")

    def member_pids(self) -> dict[str, int]:
        """The process id of every running member, by name."""
        return {n: m.pid for n, m in self.members.items() if m.pid is not None and m.alive}

    def pid(self, name: str) -> int:
        """The process id of a started member."""
        pid = self.members[name].pid
        if pid is None:
            raise RuntimeError(f"etcd member {name} was never started")
        return pid

    def leader_url(self) -> str:
        name = self.leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return f"http://127.0.0.1:{self.client[name]}"

    def leader_member(self) -> str:
        """The leader's name."""
        name = self.leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return name

    def follower_member(self) -> str:
        """A member that is not the leader."""
        leader = self.leader_member()
        return next(n for n in self.names if n != leader)

    def progress(self, name: str) -> tuple[int, int] | None:
        """(raftIndex, raftAppliedIndex) of member name's status (etcd's
        committed and applied index), or None if it does not answer them."""
        try:
            url = self.client_urls()[self.names.index(name)]
            status, body = gateway_request(url, "/v3/maintenance/status", {}, 1.0)
        except (OSError, http.client.HTTPException):
            return None
        # etcd 3.4's gateway spells these two in camelCase (unlike the header's fields).
        commit = body.get("raftIndex", body.get("raft_index")) if status == 200 else None
        applied = body.get("raftAppliedIndex", body.get("raft_applied_index")) if status == 200 else None
        if commit is None or applied is None:
            return None
        return int(commit), int(applied)

    def pause(self, name: str) -> None:
        """SIGSTOP member name."""
        self.members[name].pause()

    def resume(self, name: str) -> None:
        """SIGCONT a paused member."""
        self.members[name].resume()

    def grpc_address(self, role: str) -> str:
        """host:port of the gRPC services of the leader (role "leader") or
        of a follower (role "follower")."""
        leader = self.leader_name()
        if leader is None:
            raise RuntimeError("etcd has no leader")
        name = leader if role == "leader" else next(n for n in self.names if n != leader)
        return f"127.0.0.1:{self.client[name]}"
