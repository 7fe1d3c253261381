"""Idempotency keys through the APIs on a real single-node stack: the
``Idempotency-Key`` header on /v0 writes and etcd's JSON gateway (both REST
stacks: the front door's fast path and Klein), and ``idempotency-key`` gRPC
metadata on etcd's KV and dkv.v0's KV. A retry gets the first answer and
writes nothing; the same key with another request is refused (422 /
FAILED_PRECONDITION); a bad key is a 400 / INVALID_ARGUMENT."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.config import Limits
from dkv.idempotency import MAX_KEY_BYTES
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from dkv.pb import kv_pb2, kv_pb2_grpc
from tests.conftest import REST_STACKS, Stack, start_stack
from tests.test_grpc_kv import wait
from tests.test_rest import request


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.async_yield_fixture(params=REST_STACKS)
async def stack(request, tmp_path) -> AsyncIterator[Stack]:
    s, cleanups = await start_stack(tmp_path, rest=request.param)
    yield s
    for cleanup in cleanups:
        await cleanup()


def _headers(key: str | None) -> dict[bytes, list[bytes]]:
    headers = {b"content-type": [b"application/json"]}
    if key is not None:
        headers[b"idempotency-key"] = [key.encode()]
    return headers


async def post(stack: Stack, path: str, body: Any, key: str | None) -> tuple[int, Any]:
    reply = await request("POST", stack.rest_url + path, json.dumps(body).encode(), _headers(key))
    return reply.status, reply.body


async def v0_put(stack: Stack, key: bytes, value: bytes, idem: str | None) -> tuple[int, Any]:
    return await post(stack, "/v0/kv", {"key": b64(key), "value": b64(value)}, idem)


def _revision(stack: Stack) -> int:
    with stack.replication.view() as state:
        return state.revision


@pytest_twisted.ensureDeferred
async def test_v0_writes_are_applied_once(stack: Stack) -> None:
    assert await v0_put(stack, b"k", b"v1", "put-1") == (200, {})
    assert _revision(stack) == 2
    assert await v0_put(stack, b"k", b"v1", "put-1") == (200, {})  # the retry: same answer
    assert _revision(stack) == 2
    assert await v0_put(stack, b"k", b"v2", None) == (200, {})  # without a key: a new write
    assert _revision(stack) == 3
    reply = await request("DELETE", f"{stack.rest_url}/v0/kv/key/{b64(b'k')}", headers=_headers("del-1"))
    assert reply.status == 200 and _revision(stack) == 4
    reply = await request("DELETE", f"{stack.rest_url}/v0/kv/key/{b64(b'k')}", headers=_headers("del-1"))
    assert reply.status == 200 and _revision(stack) == 4
    assert stack.replication.read(b"k") is None


@pytest_twisted.ensureDeferred
async def test_v0_same_key_other_request_is_422(stack: Stack) -> None:
    assert (await v0_put(stack, b"k", b"v1", '"quoted-key"'))[0] == 200
    status, body = await v0_put(stack, b"k", b"v2", "quoted-key")  # the same key, unquoted
    assert status == 422
    assert "different request" in body["error"] and body["code"] == 9
    assert stack.replication.read(b"k") == b"v1" and _revision(stack) == 2


@pytest.mark.parametrize("bad", ["", "x" * (MAX_KEY_BYTES + 1)])
@pytest_twisted.ensureDeferred
async def test_v0_bad_key_is_400(stack: Stack, bad: str) -> None:
    status, body = await v0_put(stack, b"k", b"v", bad)
    assert status == 400 and "Idempotency-Key" in body["error"]
    assert _revision(stack) == 1


@pytest.mark.parametrize("path", ["/v3/kv/put", "/v3/kv/txn", "/v3/kv/deleterange", "/v3/kv/compaction"])
@pytest_twisted.ensureDeferred
async def test_gateway_bad_key_is_400_in_etcds_error_form(stack: Stack, path: str) -> None:
    # Found by schemathesis: the gateway answered dkv's {"error", "code"} here.
    body = {"key": b64(b"k"), "value": b64(b"v")} if path == "/v3/kv/put" else {}
    status, answer = await post(stack, path, body, "x" * (MAX_KEY_BYTES + 1))
    assert status == 400
    assert set(answer) == {"error", "message", "code"} and answer["code"] == 3
    assert "Idempotency-Key" in answer["message"] and answer["message"].startswith("etcdserver: ")
    assert _revision(stack) == 1


@pytest_twisted.ensureDeferred
async def test_gateway_writes_are_applied_once(stack: Stack) -> None:
    put = {"key": b64(b"foo"), "value": b64(b"bar"), "prev_kv": True}
    await post(stack, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"old")}, None)
    status, first = await post(stack, "/v3/kv/put", put, "gw-put")
    assert status == 200 and first["header"]["revision"] == "3" and first["prev_kv"]["value"] == b64(b"old")
    await post(stack, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"newer")}, None)
    assert await post(stack, "/v3/kv/put", put, "gw-put") == (200, first)
    assert _revision(stack) == 4
    txn = {"success": [{"request_put": {"key": b64(b"t"), "value": b64(b"1")}}]}
    status, first_txn = await post(stack, "/v3/kv/txn", txn, "gw-txn")
    assert status == 200 and await post(stack, "/v3/kv/txn", txn, "gw-txn") == (200, first_txn)
    dr = {"key": b64(b"t")}
    status, first_dr = await post(stack, "/v3/kv/deleterange", dr, "gw-del")
    assert first_dr["deleted"] == "1" and await post(stack, "/v3/kv/deleterange", dr, "gw-del") == (200, first_dr)
    status, first_c = await post(stack, "/v3/kv/compaction", {"revision": "3"}, "gw-c")
    assert status == 200 and await post(stack, "/v3/kv/compaction", {"revision": "3"}, "gw-c") == (200, first_c)
    assert _revision(stack) == 6
    status, body = await post(stack, "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"x")}, "gw-put")
    assert status == 422 and body["code"] == 9 and "different request" in body["message"]
    assert _revision(stack) == 6


@pytest_twisted.ensureDeferred
async def test_window_zero_ignores_keys(tmp_path) -> None:
    s, cleanups = await start_stack(tmp_path, limits=Limits(idempotency_window=0))
    try:
        assert (await v0_put(s, b"k", b"v", "k1"))[0] == 200
        assert (await v0_put(s, b"k", b"v", "k1"))[0] == 200
        assert (await v0_put(s, b"k", b"other", "k1"))[0] == 200
        assert _revision(s) == 4
    finally:
        for cleanup in cleanups:
            await cleanup()


# -- gRPC ----------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def channel(tmp_path) -> AsyncIterator[tuple[Stack, aio.Channel]]:
    s, cleanups = await start_stack(tmp_path)
    ch = aio.insecure_channel(s.rpc_address)
    yield s, ch
    await wait(ch.close())
    for cleanup in cleanups:
        await cleanup()


@pytest_twisted.ensureDeferred
async def test_grpc_metadata_key_applies_etcd_writes_once(channel) -> None:
    s, ch = channel
    kv = pb_grpc.KVStub(ch)
    md = (("idempotency-key", "g-1"),)
    first = await wait(kv.Put(pb.PutRequest(key=b"g", value=b"1"), metadata=md, timeout=10))
    again = await wait(kv.Put(pb.PutRequest(key=b"g", value=b"1"), metadata=md, timeout=10))
    assert first == again and first.header.revision == 2 and _revision(s) == 2
    txn = pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"h", value=b"2"))])
    md_txn = (("idempotency-key", "g-2"),)
    t1 = await wait(kv.Txn(txn, metadata=md_txn, timeout=10))
    assert await wait(kv.Txn(txn, metadata=md_txn, timeout=10)) == t1
    d1 = await wait(kv.DeleteRange(pb.DeleteRangeRequest(key=b"h"), metadata=(("idempotency-key", "g-3"),)))
    d2 = await wait(kv.DeleteRange(pb.DeleteRangeRequest(key=b"h"), metadata=(("idempotency-key", "g-3"),)))
    assert d1 == d2 and d1.deleted == 1
    c1 = await wait(kv.Compact(pb.CompactionRequest(revision=2), metadata=(("idempotency-key", "g-4"),)))
    c2 = await wait(kv.Compact(pb.CompactionRequest(revision=2), metadata=(("idempotency-key", "g-4"),)))
    assert c1 == c2
    assert _revision(s) == 4
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wait(kv.Put(pb.PutRequest(key=b"g", value=b"other"), metadata=md, timeout=10))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "different request" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await wait(kv.Put(pb.PutRequest(key=b"g", value=b"1"), metadata=(("idempotency-key", "x" * 300),)))
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _revision(s) == 4


@pytest_twisted.ensureDeferred
async def test_grpc_metadata_key_on_dkv_kv(channel) -> None:
    s, ch = channel
    kv = kv_pb2_grpc.KVStub(ch)
    md = (("idempotency-key", "v0-1"),)
    await wait(kv.Put(kv_pb2.PutRequest(key=b"a", value=b"1"), metadata=md, timeout=10))
    await wait(kv.Put(kv_pb2.PutRequest(key=b"a", value=b"1"), metadata=md, timeout=10))
    assert _revision(s) == 2
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wait(kv.Put(kv_pb2.PutRequest(key=b"a", value=b"2"), metadata=md, timeout=10))
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await wait(kv.Delete(kv_pb2.DeleteRequest(key=b"a"), metadata=(("idempotency-key", ""),), timeout=10))
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert s.replication.read(b"a") == b"1"


@pytest_twisted.ensureDeferred
async def test_lease_grant_with_a_key_grants_one_lease(stack: Stack) -> None:
    """A grant with ID 0 gets a random id from the node that takes it; its
    retry (the same request as asked, the same key) answers the first id and
    grants nothing more; a revoke's retry answers the first revoke."""
    status, first = await post(stack, "/v3/lease/grant", {"TTL": "60"}, "grant-1")
    assert status == 200 and int(first["ID"]) != 0
    status, again = await post(stack, "/v3/lease/grant", {"TTL": "60"}, "grant-1")
    assert (status, again["ID"]) == (200, first["ID"])
    status, listed = await post(stack, "/v3/lease/leases", {}, None)
    assert status == 200 and [lease["ID"] for lease in listed["leases"]] == [first["ID"]]
    assert stack.node.leases is stack.node.keyed(b"any").leases  # one lessor per node
    assert (await post(stack, "/v3/lease/revoke", {"ID": first["ID"]}, "revoke-1"))[0] == 200
    assert (await post(stack, "/v3/lease/revoke", {"ID": first["ID"]}, "revoke-1"))[0] == 200
    assert (await post(stack, "/v3/lease/revoke", {"ID": first["ID"]}, None))[0] == 404
