"""etcd's v3 API on a real single-node stack: the JSON gateway on the REST port
(answers shaped as etcd 3.4's gateway answers them, see
``/work/shared/etcd-gateway-facts.md``) and the gRPC services on the RPC port,
on the same keyspace as ``/v0``."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.ids import cluster_number, member_id
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from tests.conftest import Stack, start_stack
from tests.test_grpc_kv import wait
from tests.test_rest import put as v0_put
from tests.test_rest import request


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.async_yield_fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    s, cleanups = await start_stack(tmp_path)
    yield s
    for cleanup in cleanups:
        await cleanup()


async def gateway(stack: Stack, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    reply = await request("POST", stack.rest_url + path, json.dumps(body).encode())
    return reply.status, reply.body


def _header(stack: Stack, revision: int) -> dict[str, Any]:
    raft = stack.replication.raft
    assert raft is not None
    return {
        "cluster_id": str(cluster_number(stack.replication.cluster_id)),
        "member_id": str(member_id("a")),
        "revision": str(revision),
        "raft_term": str(raft.term),
    }


@pytest_twisted.ensureDeferred
async def test_the_gateway_answers_as_etcds(stack: Stack) -> None:
    """The samples of etcd 3.4's gateway, field for field (header values are
    dkv's own)."""
    status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"bar")})
    assert (status, body) == (200, {"header": _header(stack, 2)})
    status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"baz"), "prev_kv": True})
    assert body == {
        "header": _header(stack, 3),
        "prev_kv": {
            "key": b64(b"foo"),
            "create_revision": "2",
            "mod_revision": "2",
            "version": "1",
            "value": b64(b"bar"),
        },
    }
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"foo")})
    assert body == {
        "header": _header(stack, 3),
        "kvs": [
            {"key": b64(b"foo"), "create_revision": "2", "mod_revision": "3", "version": "2", "value": b64(b"baz")}
        ],
        "count": "1",
    }
    status, body = await gateway(
        stack,
        "/v3/kv/txn",
        {
            "compare": [{"key": b64(b"foo"), "target": "VALUE", "result": "EQUAL", "value": b64(b"baz")}],
            "success": [{"request_put": {"key": b64(b"foo"), "value": b64(b"qux")}}],
            "failure": [{"request_range": {"key": b64(b"foo")}}],
        },
    )
    assert body == {
        "header": _header(stack, 4),
        "succeeded": True,
        "responses": [{"response_put": {"header": {"revision": "4"}}}],
    }
    status, body = await gateway(stack, "/v3/kv/deleterange", {"key": b64(b"foo"), "prev_kv": True})
    assert body == {
        "header": _header(stack, 5),
        "deleted": "1",
        "prev_kvs": [
            {"key": b64(b"foo"), "create_revision": "2", "mod_revision": "4", "version": "3", "value": b64(b"qux")}
        ],
    }
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"nothing")})
    assert (status, body) == (200, {"header": _header(stack, 5)})


@pytest_twisted.ensureDeferred
async def test_v0_and_v3_share_one_keyspace(stack: Stack) -> None:
    await v0_put(stack, b"k", b"from-v0")
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"k")})
    assert body["kvs"][0]["value"] == b64(b"from-v0") and body["header"]["revision"] == "2"
    await gateway(stack, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"from-v3")})
    reply = await request("GET", f"{stack.rest_url}/v0/kv/key/{b64(b'k')}")
    assert reply.body["value"] == b64(b"from-v3")


@pytest_twisted.ensureDeferred
async def test_a_range_of_one_key_answers_as_any_range(stack: Stack) -> None:
    """A Range of one key with no option takes a path of its own
    (``Node.range_key``); a body with an option that changes nothing
    (``limit`` 0) takes the general one: the answers are the same, found or
    not, linearizable or serializable, and so are the errors."""
    await gateway(stack, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v")})
    await gateway(stack, "/v3/kv/put", {"key": b64(b"empty"), "value": ""})
    await gateway(stack, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v2")})
    await gateway(stack, "/v3/kv/put", {"key": b64(b"\x00\xff/+"), "value": b64(b"\x00"), "lease": "0"})
    for key in (b"k", b"empty", b"absent", b"\x00\xff/+"):
        for serializable in (False, True):
            plain = {"key": b64(key), "serializable": serializable}
            answers = [await gateway(stack, "/v3/kv/range", body) for body in (plain, {**plain, "limit": "0"})]
            assert answers[0] == answers[1]
            assert answers[0][0] == 200 and answers[0][1]["header"] == _header(stack, 5)
            assert answers[0][1].get("count") == (None if key == b"absent" else "1")
    empty = [await gateway(stack, "/v3/kv/range", body) for body in ({"key": ""}, {"key": "", "limit": "0"})]
    assert empty[0] == empty[1] == (400, {"error": "etcdserver: key is not provided",
                                          "message": "etcdserver: key is not provided", "code": 3})


@pytest_twisted.ensureDeferred
async def test_history_compaction_and_its_errors(stack: Stack) -> None:
    for value in (b"1", b"2", b"3"):
        await gateway(stack, "/v3/kv/put", {"key": b64(b"h"), "value": b64(value)})
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"h"), "revision": "2"})
    assert body["kvs"][0]["value"] == b64(b"1")
    status, body = await gateway(stack, "/v3/kv/compaction", {"revision": "3"})
    assert status == 200 and body["header"]["revision"] == "4"
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"h"), "revision": "2"})
    message = "etcdserver: mvcc: required revision has been compacted"
    assert (status, body) == (400, {"error": message, "message": message, "code": 11})
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"h"), "revision": "99"})
    assert status == 400 and body["message"] == "etcdserver: mvcc: required revision is a future revision"
    status, body = await gateway(stack, "/v3/kv/put", {"value": b64(b"x")})
    assert (status, body["message"], body["code"]) == (400, "etcdserver: key is not provided", 3)
    ops = [{"request_put": {"key": b64(b"t%d" % i), "value": ""}} for i in range(129)]
    status, body = await gateway(stack, "/v3/kv/txn", {"success": ops})
    assert body["message"] == "etcdserver: too many operations in txn request"
    dup = [{"request_put": {"key": b64(b"d"), "value": ""}}] * 2
    status, body = await gateway(stack, "/v3/kv/txn", {"success": dup})
    assert body["message"] == "etcdserver: duplicate key given in txn request"
    status, body = await gateway(stack, "/v3/kv/range", {"key": 5})
    assert status == 400 and body["code"] == 3


@pytest_twisted.ensureDeferred
async def test_cluster_and_maintenance_over_the_gateway(stack: Stack) -> None:
    await gateway(stack, "/v3/kv/put", {"key": b64(b"x"), "value": b64(b"y")})
    status, body = await gateway(stack, "/v3/cluster/member/list", {})
    [member] = body["members"]
    assert member["ID"] == str(member_id("a")) and member["name"] == "a"
    assert member["peerURLs"] == member["clientURLs"] and "isLearner" not in member
    status, body = await gateway(stack, "/v3/maintenance/status", {})
    assert body["version"] == "3.4.0" and body["leader"] == str(member_id("a"))
    assert int(body["raftIndex"]) >= 2 and int(body["dbSize"]) > 0
    status, one = await gateway(stack, "/v3/maintenance/hashkv", {})
    status, two = await gateway(stack, "/v3/maintenance/hashkv", {})
    assert one["hash"] == two["hash"] and one["compact_revision"] == "-1"
    status, body = await gateway(stack, "/v3/maintenance/alarm", {})
    assert (status, list(body)) == (200, ["header"])
    status, body = await gateway(stack, "/v3/maintenance/defragment", {})
    assert status == 200
    reply = await request("GET", stack.rest_url + "/version")
    assert reply.body == {"etcdserver": "3.4.0", "etcdcluster": "3.4.0"}
    reply = await request("GET", stack.rest_url + "/health")
    assert (reply.status, reply.body) == (200, {"health": "true"})
    status, body = await gateway(stack, "/v3/cluster/member/remove", {"ID": "12345"})
    assert (status, body["message"]) == (404, "etcdserver: member not found")


@pytest_twisted.async_yield_fixture
async def stubs():
    channels: list[aio.Channel] = []

    def make(stack: Stack) -> tuple[Any, ...]:
        channel = aio.insecure_channel(stack.rpc_address)
        channels.append(channel)
        return (
            pb_grpc.KVStub(channel),
            pb_grpc.ClusterStub(channel),
            pb_grpc.MaintenanceStub(channel),
            pb_grpc.LeaseStub(channel),
        )

    yield make
    for channel in channels:
        await wait(channel.close())


@pytest_twisted.ensureDeferred
async def test_grpc_services(stack: Stack, stubs) -> None:
    kv, cluster, maintenance, lease = stubs(stack)
    put = await wait(kv.Put(pb.PutRequest(key=b"g", value=b"1"), timeout=10))
    assert put.header.revision == 2 and put.header.member_id == member_id("a")
    txn = await wait(
        kv.Txn(
            pb.TxnRequest(
                compare=[pb.Compare(key=b"g", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=1)],
                success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"g", prev_kv=True))],
            ),
            timeout=10,
        )
    )
    assert txn.succeeded and txn.responses[0].response_delete_range.prev_kvs[0].value == b"1"
    ranged = await wait(kv.Range(pb.RangeRequest(key=b"g", revision=2), timeout=10))
    assert [kv_.value for kv_ in ranged.kvs] == [b"1"] and ranged.header.revision == 3
    with pytest.raises(aio.AioRpcError) as caught:
        await wait(kv.Range(pb.RangeRequest(key=b"g", revision=9), timeout=10))
    assert caught.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details() == "etcdserver: mvcc: required revision is a future revision"
    members = await wait(cluster.MemberList(pb.MemberListRequest(), timeout=10))
    assert [m.name for m in members.members] == ["a"]
    st = await wait(maintenance.Status(pb.StatusRequest(), timeout=10))
    assert st.leader == member_id("a") and st.raftAppliedIndex >= 3

    async def snapshot() -> list[pb.SnapshotResponse]:
        return [c async for c in maintenance.Snapshot(pb.SnapshotRequest(), timeout=10)]

    chunks = await wait(snapshot())
    blob = b"".join(c.blob for c in chunks)
    assert chunks[-1].remaining_bytes == 0 and len(blob) > 32
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]
    leases = await wait(lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=10))
    assert list(leases.leases) == [] and leases.header.member_id == member_id("a")


@pytest_twisted.ensureDeferred
async def test_the_gateway_streams_a_snapshot_in_chunks(stack: Stack, monkeypatch) -> None:
    """``/v3/maintenance/snapshot``: one ``{"result": ...}`` line per chunk,
    remaining_bytes counting down to 0, the blobs the db and its SHA-256;
    the node's temporary copy is gone afterwards."""
    import os
    import tempfile

    import treq

    from dkv.api import etcd_gateway

    monkeypatch.setattr(etcd_gateway, "SNAPSHOT_CHUNK", 4096)
    for i in range(20):
        await gateway(stack, "/v3/kv/put", {"key": b64(b"k%d" % i), "value": b64(b"v" * 500)})
    temps = set(os.listdir(tempfile.gettempdir()))
    resp = await treq.post(stack.rest_url + "/v3/maintenance/snapshot", data=b"{}", persistent=False)
    raw = await treq.content(resp)
    assert resp.code == 200
    results = [json.loads(line)["result"] for line in raw.splitlines()]
    assert len(results) > 2
    blobs = [base64.b64decode(r["blob"]) for r in results]
    assert all(len(b) == 4096 for b in blobs[:-1])
    blob = b"".join(blobs)
    assert [int(r.get("remaining_bytes", 0)) for r in results] == [
        len(blob) - sum(map(len, blobs[: n + 1])) for n in range(len(blobs))
    ]
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]
    assert not {t for t in set(os.listdir(tempfile.gettempdir())) - temps if t.startswith("dkv-snapshot-")}
