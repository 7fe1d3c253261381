"""The harness itself: the etcd launcher, the endpoints a compatibility
test receives, and the probe that tells whether a server speaks etcd's
JSON gateway."""

from __future__ import annotations

import http.server

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints, EtcdCluster, etcd_binary, serves_v3_gateway
from dkv.testing.launcher import free_ports
from dkv.testing.process import pid_gone
from tests.http_stub import serving

pytestmark = [
    pytest.mark.process,
    pytest.mark.etcd,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
]


def test_an_etcd_cluster_serves_on_free_ports_and_leaves_nothing_behind() -> None:
    with EtcdCluster() as etcd:
        etcd.start()
        api = etcd.endpoints()
        pids = [member.pid for member in etcd.members.values()]
        assert api.system == "etcd" and api.names == ("e0", "e1", "e2")
        assert [url.rsplit(":", 1)[1] for url in api.gateway_urls] == [a.rsplit(":", 1)[1] for a in api.grpc_addresses]
        assert len(set(api.grpc_addresses)) == 3
        assert api.etcdctl_endpoints == ",".join(api.grpc_addresses)
        leader = api.leader()
        assert etcd.leader_name() == api.names[leader]
        assert len(set(api.member_ids())) == 3
        put = api.ok("/v3/kv/put", {"key": "YQ==", "value": "Yg=="}, member=2)
        assert put["header"]["revision"] == "2"
        got = api.ok("/v3/kv/range", {"key": "YQ=="}, member=0)
        assert got["kvs"][0]["value"] == "Yg=="
        assert serves_v3_gateway(api.gateway_urls[1])
        directory = etcd.dir
    assert all(pid is not None and pid_gone(pid) for pid in pids)
    assert not directory.exists()


def test_members_are_killed_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError, match="on purpose"), EtcdCluster() as etcd:
        etcd.start()
        pids = [member.pid for member in etcd.members.values()]
        raise RuntimeError("on purpose")
    assert all(pid is not None and pid_gone(pid) for pid in pids)


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_the_probe_says_no_to_a_server_without_the_gateway_and_to_no_server() -> None:
    with serving(_NotEtcd) as not_etcd:
        assert not serves_v3_gateway("http://" + not_etcd)
    assert not serves_v3_gateway(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=2)


def test_what_a_compatibility_test_receives(v3_cluster: ApiEndpoints) -> None:
    """Gateway URLs and gRPC addresses, one per member, all distinct
    members; the gateway answers on every member."""
    api = v3_cluster
    assert api.system in ("etcd", "dkv") and len(api.names) == 3
    assert len(api.gateway_urls) == len(api.grpc_addresses) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in api.gateway_urls)
    assert all(address.startswith("127.0.0.1:") for address in api.grpc_addresses)
    assert api.directory.is_dir()
    assert all(serves_v3_gateway(url) for url in api.gateway_urls)
