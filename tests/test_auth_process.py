"""Auth on real processes: users, roles and the enabled flag survive a
restart, and a member that catches up by snapshot knows them."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from dkv.auth.tokens import issued_at
from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64

pytestmark = pytest.mark.process

SNAPSHOT_ARGS = ["--snapshot-entries", "50", "--snapshot-keep-entries", "10"]


def post(cluster: Cluster, node: str, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.rest_ports[node], timeout=15)
    try:
        headers = {"Authorization": token} if token else {}
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def must(cluster: Cluster, node: str, path: str, body: Any, token: str | None = None) -> Any:
    status, answer = post(cluster, node, path, body, token)
    assert status == 200, (node, path, status, answer)
    return answer


def authenticate(cluster: Cluster, node: str, name: str, password: str) -> str:
    return str(must(cluster, node, "/v3/auth/authenticate", {"name": name, "password": password})["token"])


def test_auth_survives_a_restart_and_travels_in_a_snapshot() -> None:
    with Cluster(extra_args=SNAPSHOT_ARGS, request_timeout=3.0) as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        must(cluster, leader, "/v3/auth/user/add", {"name": "root", "password": "rootpw"})
        must(cluster, leader, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        must(cluster, leader, "/v3/auth/role/add", {"name": "reader"})
        perm = {"permType": "READ", "key": b64(b"/app/"), "range_end": b64(b"/app0")}
        must(cluster, leader, "/v3/auth/role/grant", {"name": "reader", "perm": perm})
        must(cluster, leader, "/v3/auth/user/add", {"name": "alice", "password": "pw"})
        must(cluster, leader, "/v3/auth/user/grant", {"user": "alice", "role": "reader"})
        must(cluster, leader, "/v3/kv/put", {"key": b64(b"/app/x"), "value": b64(b"1")})
        must(cluster, leader, "/v3/auth/enable", {})

        behind = next(n for n in cluster.ids if n != leader)
        cluster.kill(behind)
        others = [n for n in cluster.ids if n != behind]
        root = authenticate(cluster, others[0], "root", "rootpw")
        for i in range(150):  # the log is compacted past what the stopped member has
            must(cluster, others[0], "/v3/kv/put", {"key": b64(b"/k%d" % i), "value": b64(b"v")}, root)
        assert post(cluster, others[0], "/v3/kv/put", {"key": b64(b"/k"), "value": b64(b"v")})[0] == 400

        cluster.restart(behind)
        commit = cluster.status(cluster.leader())[1]["commit_index"]
        cluster.wait_applied(behind, commit, timeout=60)
        wait_until(lambda: "installed a snapshot" in cluster.nodes[behind].log_text(), timeout=30)

        alice = authenticate(cluster, behind, "alice", "pw")
        found = must(cluster, behind, "/v3/kv/range", {"key": b64(b"/app/x")}, alice)
        assert found["kvs"][0]["value"] == b64(b"1")
        assert post(cluster, behind, "/v3/kv/range", {"key": b64(b"/k1")}, alice)[0] == 403
        assert post(cluster, behind, "/v3/kv/range", {"key": b64(b"/app/x")})[0] == 400  # no user
        assert post(cluster, behind, "/v3/kv/range", {"key": b64(b"/app/x")}, root)[0] == 401  # not its token

        cluster.restart(others[0])  # its own db, after a restart
        cluster.wait_applied(others[0], commit, timeout=60)
        assert post(cluster, others[0], "/v3/kv/range", {"key": b64(b"/app/x")})[0] == 400
        alice = authenticate(cluster, others[0], "alice", "pw")
        must(cluster, others[0], "/v3/kv/range", {"key": b64(b"/app/x")}, alice)


def test_a_token_issued_by_one_member_is_good_on_every_member() -> None:
    """Authenticate goes through the log (as etcd's): every member learns
    the token; a restarted member knows none, and the client re-authenticates."""
    with Cluster(request_timeout=3.0) as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        must(cluster, leader, "/v3/auth/user/add", {"name": "root", "password": "rootpw"})
        must(cluster, leader, "/v3/auth/user/grant", {"user": "root", "role": "root"})
        must(cluster, leader, "/v3/auth/enable", {})
        follower = next(n for n in cluster.ids if n != leader)
        token = authenticate(cluster, follower, "root", "rootpw")
        for node in cluster.ids:  # at once: a member that has not applied the token yet waits until it has
            must(cluster, node, "/v3/kv/put", {"key": b64(node.encode()), "value": "MQ=="}, token)
        # The restart is a crash: a member applies again the entries whose
        # apply its db had yet to store (held_apply), an Authenticate among
        # them re-issuing its token; wait until the db holds this one's.
        issued = issued_at(token)
        wait_until(
            lambda: (st := cluster.nodes[follower].try_status()) and st["stored_index"] >= issued,
            10.0,
            f"{follower}'s db to hold the apply of entry {issued}",
        )
        cluster.restart(follower)
        status, answer = post(cluster, follower, "/v3/kv/range", {"key": b64(b"a")}, token)
        assert (status, answer["message"]) == (401, "etcdserver: invalid auth token")
        again = authenticate(cluster, follower, "root", "rootpw")
        assert must(cluster, follower, "/v3/kv/range", {"key": b64(leader.encode())}, again)["count"] == "1"
