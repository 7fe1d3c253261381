"""Issue 14's judgement: a 3-node dkv with client TLS (client certificates
required), peer mutual TLS and auth enabled, driven by etcdctl with
``--cacert/--cert/--key --user``: the etcdctl commands of the compatibility
set (put, get with its options, del, txn, compaction, member list, endpoint
status and hashkv, snapshot save, move-leader, leases, watch, lock), and a
user with READ on ``/app/`` who reads it, cannot write it and sees nothing
outside it."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dkv.testing.certs import ClusterCerts
from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import etcd_env, etcdctl_binary

pytestmark = pytest.mark.process

ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:pw")
DENIED = "etcdserver: permission denied"
#: What ``txn -i`` prints while it reads its input.
PROMPTS = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    binary = etcdctl_binary()
    if binary is None:
        pytest.skip("etcdctl is not installed")
    certs = ClusterCerts(tmp_path_factory.mktemp("certs"))
    with Cluster(tmp_path_factory.mktemp("cluster"), tls=certs) as cluster:
        cluster.start()
        cluster.wait_settled()
        endpoints = ",".join(f"https://127.0.0.1:{cluster.rpc_ports[i]}" for i in cluster.ids)
        tls = ("--cacert", str(certs.client_ca_path), "--cert", str(certs.client_pair.cert),
               "--key", str(certs.client_pair.key))  # fmt: skip

        def etcdctl(
            *args: str, stdin: str | None = None, endpoint: str | None = None, seconds: int | None = None
        ) -> subprocess.CompletedProcess:
            """etcdctl with args; ``seconds``: stopped after that long (a watch)."""
            limit = ["timeout", str(seconds)] if seconds else []
            return subprocess.run(
                [*limit, binary, "--endpoints", endpoint or endpoints, *tls, "--command-timeout", "20s", *args],
                env=etcd_env() | {"ETCDCTL_API": "3"}, input=stdin, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        def ok(*args: str, stdin: str | None = None, endpoint: str | None = None) -> str:
            done = etcdctl(*args, stdin=stdin, endpoint=endpoint)
            assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr}"
            return done.stdout

        ok("user", "add", "root", "--new-user-password=rootpw")
        ok("role", "add", "reader")
        ok("role", "grant-permission", "reader", "read", "/app/", "--prefix")
        ok("user", "add", "alice", "--new-user-password=pw")
        ok("user", "grant-role", "alice", "reader")
        assert ok("auth", "enable") == "Authentication Enabled\n"
        yield cluster, etcdctl, ok, certs


def test_the_etcdctl_set_as_root_over_tls(setup, tmp_path: Path) -> None:
    cluster, etcdctl, ok, _certs = setup
    assert "user name is empty" in etcdctl("get", "x").stderr  # auth is on: no user, no answer
    for key, value in (("/app/x", "1"), ("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("zoo", "z")):
        assert ok(*ROOT, "put", key, value) == "OK\n"
    assert ok(*ROOT, "get", "foo", "--prefix", "--keys-only").split() == ["foo", "foo1", "foo2"]
    assert ok(*ROOT, "get", "foo1", "--from-key", "--limit", "2").split() == ["foo1", "bar1", "foo2", "bar2"]
    assert ok(*ROOT, "get", "foo", "--prefix", "--sort-by", "KEY", "--order", "DESCEND", "--keys-only").split() == [
        "foo2", "foo1", "foo",
    ]  # fmt: skip
    got = json.loads(ok(*ROOT, "get", "foo", "-w", "json"))
    revision = got["kvs"][0]["mod_revision"]
    assert ok(*ROOT, "put", "foo", "baz") == "OK\n"
    assert ok(*ROOT, "get", "foo", "--rev", str(revision)).split() == ["foo", "bar"]
    assert ok(*ROOT, "del", "zoo", "--prev-kv").split() == ["1", "zoo", "z"]
    txn = 'value("foo") = "baz"\n\nput foo qux\n\nput foo nope\n\n'
    assert ok(*ROOT, "txn", "-i", stdin=txn) == PROMPTS + "SUCCESS\n\nOK\n"
    failed = 'value("foo") = "baz"\n\nput foo nope\n\nget foo1\n\n'
    assert ok(*ROOT, "txn", "-i", stdin=failed) == PROMPTS + "FAILURE\n\nfoo1\nbar1\n"
    now = json.loads(ok(*ROOT, "get", "foo", "-w", "json"))["header"]["revision"]
    assert ok(*ROOT, "compaction", str(now)) == f"compacted revision {now}\n"
    assert "required revision has been compacted" in etcdctl(*ROOT, "get", "foo", "--rev", "2").stderr

    members = json.loads(ok(*ROOT, "member", "list", "-w", "json"))["members"]
    assert sorted(m["name"] for m in members) == sorted(cluster.ids)
    assert all(url.startswith("https://") for m in members for url in m["clientURLs"])
    statuses = json.loads(ok(*ROOT, "endpoint", "status", "--cluster", "-w", "json"))
    assert len(statuses) == 3 and len({s["Status"]["leader"] for s in statuses}) == 1
    hashes = json.loads(ok(*ROOT, "endpoint", "hashkv", "--cluster", "-w", "json"))
    assert len(hashes) == 3 and len({h["HashKV"]["hash"] for h in hashes}) == 1

    saved = tmp_path / "backup.db"
    assert "Snapshot saved at" in ok(*ROOT, "snapshot", "save", str(saved), endpoint=statuses[0]["Endpoint"])
    assert saved.stat().st_size > 0

    leader = statuses[0]["Status"]["leader"]
    target = next(m for m in members if m["ID"] != leader)
    leader_endpoint = next(s["Endpoint"] for s in statuses if s["Status"]["header"]["member_id"] == leader)
    moved = ok(*ROOT, "move-leader", format(target["ID"], "x"), endpoint=leader_endpoint)
    assert "Leadership transferred" in moved

    lease = ok(*ROOT, "lease", "grant", "60").split()[1]
    assert ok(*ROOT, "put", "leased", "v", "--lease", lease) == "OK\n"
    assert "leased" in ok(*ROOT, "lease", "timetolive", lease, "--keys")
    assert ok(*ROOT, "lease", "revoke", lease) == f"lease {lease} revoked\n"
    assert ok(*ROOT, "get", "leased") == ""

    assert ok(*ROOT, "put", "watched", "1") == "OK\n"
    at = json.loads(ok(*ROOT, "get", "watched", "-w", "json"))["kvs"][0]["mod_revision"]
    assert ok(*ROOT, "put", "watched", "2") == "OK\n"
    watched = etcdctl(*ROOT, "watch", "watched", "--rev", str(at), "--prev-kv", seconds=5)
    assert watched.stdout == "PUT\nwatched\n1\nPUT\nwatched\n1\nwatched\n2\n", watched
    locked = ok(*ROOT, "lock", "mylock", "echo", "held")
    assert locked.strip().endswith("held")


def test_a_reader_of_a_prefix_over_tls(setup) -> None:
    cluster, etcdctl, ok, certs = setup
    assert ok(*ROOT, "put", "/app/y", "2") == "OK\n"
    assert ok(*ALICE, "get", "/app/y").split() == ["/app/y", "2"]
    assert DENIED in etcdctl(*ALICE, "put", "/app/y", "3").stderr
    assert DENIED in etcdctl(*ALICE, "get", "/other").stderr
    assert DENIED in etcdctl(*ALICE, "get", "", "--prefix").stderr
    assert "authentication failed" in etcdctl("--user", "alice:wrong", "get", "/app/y").stderr
    # The refusals are counted in /metrics (over https with a client certificate).
    counted: dict[str, float] = {}
    for node in cluster.ids:
        port = cluster.rest_ports[node]
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=certs.ssl_context())
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dkv_auth_failures_total":
                    reason = sample.labels["reason"]
                    counted[reason] = counted.get(reason, 0) + sample.value
    assert counted["denied"] >= 3 and counted["authenticate"] >= 1, counted


def test_a_node_joins_by_its_peer_certificate_while_auth_is_on(setup) -> None:
    cluster, _etcdctl, ok, _certs = setup
    node = cluster.add_node("d", cluster.ids[1], timeout=60)
    assert node.alive
    members = json.loads(ok(*ROOT, "member", "list", "-w", "json"))["members"]
    assert any(m["name"] == "d" and m.get("isLearner") for m in members), members
