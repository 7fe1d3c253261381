"""Three etcd members on this machine, as ``dkv.testing.etcd_cluster``
launches them for the compatibility tests: free loopback ports, a new
cluster in a temporary directory, default snapshot settings, warn-level
logs in files."""

from __future__ import annotations

import json
from pathlib import Path

from dkv.testing.etcd_cluster import EtcdCluster as _EtcdMembers


class EtcdCluster(_EtcdMembers):
    """Three etcd members, e0..e2, each a ``Process`` in its own session."""

    system = "etcd"

    def __init__(self, etcd: str, base_dir: Path | None) -> None:
        super().__init__(etcd=etcd, parent=base_dir, prefix="vs-etcd-etcd-")

    def leader_url(self) -> str:
        name = self.leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return f"http://127.0.0.1:{self.client[name]}"

    def put_request(self, key_b64: str, value_b64: str) -> tuple[str, str, bytes]:
        return "POST", "/v3/kv/put", json.dumps({"key": key_b64, "value": value_b64}).encode()
