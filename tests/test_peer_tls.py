"""Peer TLS on the native peer protocol: a 3-node cluster with
--peer-transport twisted and peer certificates elects a leader and
replicates over mutual TLS on the peer ports."""

from __future__ import annotations

from dkv.testing.certs import ClusterCerts
from dkv.testing.cluster import Cluster


def test_cluster_over_peer_tls(tmp_path) -> None:
    certs = ClusterCerts(tmp_path / "certs")
    with Cluster(tmp_path / "c", ["a", "b", "c"], peer_transport="twisted", tls=certs) as c:
        c.start()
        leader = c.leader(timeout=30)
        assert c.put_retry(b"k", b"v")
        commit = c.status(leader)[1]["commit_index"]
        for i in c.ids:
            c.wait_applied(i, commit, timeout=30)
        assert "peer TLS" not in c.log_tail(leader, 200)
