"""etcd3gw, the JSON gateway client OpenStack uses, unchanged, against the
cluster under test: it finds the API path from ``GET /version``, then
speaks ``/v3/...`` (numbers for enums, as it sends them)."""

from __future__ import annotations

import urllib.parse

import pytest
from etcd3gw.client import Etcd3Client

from dkv.testing.etcd_cluster import ApiEndpoints

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def client(api: ApiEndpoints, member: int) -> Etcd3Client:
    url = urllib.parse.urlsplit(api.gateway_urls[member])
    return Etcd3Client(host=url.hostname or "127.0.0.1", port=url.port or 80, timeout=10)


def meta(key: bytes, create: int, mod: int, version: int) -> dict[str, object]:
    return {"key": key, "create_revision": str(create), "mod_revision": str(mod), "version": str(version)}


def test_keys_ranges_and_deletes(v3_cluster: ApiEndpoints) -> None:
    etcd = client(v3_cluster, 1)
    assert etcd.api_path == "/v3/"  # GET /version names a server of 3.4 or later
    for key, value in (("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("zoo", "z"), ("foo", "baz")):
        assert etcd.put(key, value) is True  # revisions 2..6
    assert etcd.get("foo") == [b"baz"]
    assert etcd.get("nothing-here") == []
    assert etcd.get("foo", metadata=True) == [(b"baz", meta(b"foo", 2, 6, 2))]
    assert etcd.get_prefix("foo") == [
        (b"baz", meta(b"foo", 2, 6, 2)), (b"bar1", meta(b"foo1", 3, 3, 1)), (b"bar2", meta(b"foo2", 4, 4, 1)),
    ]  # fmt: skip
    assert [v for v, _ in etcd.get_prefix("foo", sort_order="descend", sort_target="mod")] == [b"baz", b"bar2", b"bar1"]
    assert etcd.get("foo", revision=2) == [b"bar"]
    assert etcd.get("foo", range_end="foo2", keys_only=True, metadata=True) == [
        (b"", meta(b"foo", 2, 6, 2)), (b"", meta(b"foo1", 3, 3, 1)),
    ]  # fmt: skip
    assert [m["key"] for _, m in etcd.get_all()] == [b"foo", b"foo1", b"foo2", b"zoo"]
    assert etcd.delete("zoo") is True
    assert etcd.delete("zoo") is False  # nothing deleted: the gateway omits the zero count
    assert etcd.delete_prefix("foo") is True
    assert etcd.get_prefix("foo") == [] and etcd.get_all() == []


def test_create_replace_and_a_transaction(v3_cluster: ApiEndpoints) -> None:
    etcd = client(v3_cluster, 0)
    assert etcd.create("lock", "me") is True  # revision 2
    assert etcd.create("lock", "you") is False
    assert etcd.get("lock") == [b"me"]
    assert etcd.replace("lock", "me", "you") is True  # revision 3
    assert etcd.replace("lock", "me", "them") is False
    assert etcd.get("lock") == [b"you"]
    answer = etcd.transaction(
        {
            "compare": [{"key": "bG9jaw==", "result": "EQUAL", "target": "VERSION", "version": 2}],
            "success": [
                {"request_put": {"key": "Y291bnQ=", "value": "MQ=="}},
                {"request_range": {"key": "bG9jaw=="}},
            ],
            "failure": [],
        }
    )
    header = answer.pop("header")
    assert header["revision"] == "4"
    assert answer == {
        "succeeded": True,
        "responses": [
            {"response_put": {"header": {"revision": "4"}}},
            {
                "response_range": {
                    "header": {"revision": "4"},
                    "kvs": [{"key": "bG9jaw==", "create_revision": "2", "mod_revision": "3", "version": "2",
                             "value": "eW91"}],
                    "count": "1",
                }
            },
        ],
    }  # fmt: skip
    failed = etcd.transaction({"compare": [{"key": "bG9jaw==", "result": "LESS", "target": "MOD", "mod_revision": 3}]})
    assert failed.get("succeeded", False) is False and set(failed) == {"header"}


def test_status_and_members(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    ids = [str(i) for i in api.member_ids()]
    leader = ids[api.leader()]
    for member in range(len(api.names)):
        status = client(api, member).status()
        assert status["header"]["member_id"] == ids[member]
        assert status["leader"] == leader
        assert status["version"] and int(status["dbSize"]) > 0
        assert int(status["raftIndex"]) >= int(status["raftAppliedIndex"]) > 0 and int(status["raftTerm"]) > 0
    members = client(api, 2).members()
    assert sorted(m["name"] for m in members) == sorted(api.names)
    assert sorted(m["ID"] for m in members) == sorted(ids)
    for m in members:
        assert m["clientURLs"] == ["http://" + api.grpc_addresses[api.names.index(m["name"])]]
        assert len(m["peerURLs"]) == 1 and not m.get("isLearner", False)
