"""aetcd, an asyncio gRPC client of etcd's v3 API, unchanged, against the
cluster under test: put, get, prefix and range reads, deletes, transactions
with compares, member list, status and compaction.

aetcd runs in a child process (``tests/compat/aetcd_scenario.py`` says why:
its protobuf modules and dkv's cannot share an interpreter); the child
prints what it saw and the checks are here.

(etcd3, the other gRPC client on PyPI, does not import with protobuf 4 or
later: its generated modules of 2019 build descriptors directly, which the
C++ and upb implementations refuse -- "Descriptors cannot be created
directly" -- unless the whole process runs protobuf in pure Python.)
"""

from __future__ import annotations

import json
import sys

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.launcher import child_env
from dkv.testing.process import run_to_exit

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def test_aetcd(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    ids = api.member_ids()
    leader = api.leader()
    done = run_to_exit(
        [sys.executable, "-m", "tests.compat.aetcd_scenario", api.grpc_addresses[1]], env=child_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    assert seen.pop("put") == 2
    assert seen.pop("put_prev_kv") == ["foo", "bar", 2, 2, 1]
    assert seen.pop("get") == ["foo", "baz", 2, 6, 2, 6]
    assert seen.pop("get_missing") is None
    kvs = [["foo", "baz", 2, 6, 2], ["foo1", "bar1", 3, 3, 1], ["foo2", "bar2", 4, 4, 1]]
    assert seen.pop("prefix") == {"kvs": kvs, "count": 3, "more": False}
    assert seen.pop("prefix_by_mod_descending") == ["foo", "foo2", "foo1"]
    assert seen.pop("range") == ["foo1", "foo2"]
    assert seen.pop("all") == ["foo", "foo1", "foo2", "zoo"]
    assert seen.pop("txn_held") == [True, 7, ["bar1"]]
    assert seen.pop("txn_failed") == [False, 1, [["foo2", "bar2", 4, 4, 1]], []]
    assert seen.pop("delete") == [1, ["zoo", "z", 5, 5, 1], 9]
    assert seen.pop("delete_missing") is None
    assert seen.pop("delete_prefix") == 2
    assert seen.pop("after_deletes") == 0

    members = seen.pop("members")
    assert sorted(m[0] for m in members) == sorted(ids)
    for member_id, name, peer_urls, client_urls in members:
        assert ids[api.names.index(name)] == member_id
        assert client_urls == ["http://" + api.grpc_addresses[api.names.index(name)]] and len(peer_urls) == 1
    status = seen.pop("status")
    assert status["leader"] == [ids[leader], api.names[leader]]
    assert status["version"] and status["db_size"] > 0 and status["raft_index"] > 0 and status["raft_term"] > 0

    assert seen.pop("below_compaction") == ["OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"]
    assert seen.pop("at_compaction") == [["foo", "qux", 2, 7, 3], ["foo1", "bar1", 3, 3, 1]]
    assert seen.pop("compact_again") == "etcdserver: mvcc: required revision has been compacted"
    assert seen == {}


def test_aetcd_lease(v3_cluster: ApiEndpoints) -> None:
    """aetcd's lease calls: grant (with and without an ID), put with a
    lease, time-to-live with keys, a keep-alive, expiry when keep-alives
    stop, revoke (``tests/compat/aetcd_lease_scenario.py``)."""
    done = run_to_exit(
        [sys.executable, "-m", "tests.compat.aetcd_lease_scenario", v3_cluster.grpc_addresses[1]],
        env=child_env(),
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["granted"] == [0x1234, 60, True, True, 3]
    assert seen["info"] == [0x1234, 60, True, ["l/long"]]
    assert seen["keys"] == ["l/short"]
    assert seen["refresh"] == [0x1234, 60]
    assert seen["attached"] == ["1", "2"]
    assert seen["expired_ttl"] == -1
    assert seen["long_survives"] == "1"
    assert seen["revoked"] == [None, -1]
    assert seen["put_on_revoked"] == "ClientError: etcdserver: requested lease not found"
