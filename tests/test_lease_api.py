"""etcd's Lease service on a real single-node stack: gRPC (the keep-alive
stream included) and the JSON gateway, answers and errors as etcd's."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.ids import member_id
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from tests.conftest import Stack, start_stack, wait_for
from tests.test_grpc_kv import wait
from tests.test_rest import request


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.async_yield_fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    s, cleanups = await start_stack(tmp_path)
    yield s
    for cleanup in cleanups:
        await cleanup()


@pytest_twisted.async_yield_fixture
async def channel(stack: Stack) -> AsyncIterator[aio.Channel]:
    ch = aio.insecure_channel(stack.rpc_address)
    yield ch
    await wait(ch.close())


async def gateway(stack: Stack, path: str, body: Any) -> tuple[int, Any]:
    reply = await request("POST", stack.rest_url + path, json.dumps(body).encode())
    return reply.status, reply.body


def _keys(stack: Stack) -> list[bytes]:
    with stack.replication.view() as state:
        return [kv.key for kv in state.range(pb.RangeRequest(key=b"\0", range_end=b"\0")).kvs]


@pytest_twisted.ensureDeferred
async def test_grpc_lease_life(stack: Stack, channel: aio.Channel) -> None:
    lease, kv = pb_grpc.LeaseStub(channel), pb_grpc.KVStub(channel)
    granted = await wait(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=10))
    assert granted.ID > 0 and granted.TTL == 60 and granted.header.member_id == member_id("a")
    await wait(kv.Put(pb.PutRequest(key=b"a", value=b"1", lease=granted.ID), timeout=10))
    await wait(kv.Put(pb.PutRequest(key=b"b", value=b"2", lease=granted.ID), timeout=10))
    ttl = await wait(lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=granted.ID, keys=True), timeout=10))
    assert (ttl.grantedTTL, list(ttl.keys)) == (60, [b"a", b"b"]) and 58 <= ttl.TTL <= 60
    assert ttl.header.revision == 3

    async def keep_alives() -> list[pb.LeaseKeepAliveResponse]:
        call = lease.LeaseKeepAlive(timeout=10)
        answers = []
        for lid in (granted.ID, 12345, granted.ID):
            await call.write(pb.LeaseKeepAliveRequest(ID=lid))
            answers.append(await call.read())
        await call.done_writing()
        return answers

    answers = await wait(keep_alives())
    assert [(a.ID, a.TTL) for a in answers] == [(granted.ID, 60), (12345, 0), (granted.ID, 60)]
    listed = await wait(lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=10))
    assert [s.ID for s in listed.leases] == [granted.ID]
    revoked = await wait(lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=granted.ID), timeout=10))
    assert revoked.header.revision == 4  # both keys deleted at one revision
    assert _keys(stack) == []
    gone = await wait(lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=granted.ID), timeout=10))
    assert gone.TTL == -1


@pytest_twisted.ensureDeferred
async def test_grpc_lease_errors(stack: Stack, channel: aio.Channel) -> None:
    lease, kv = pb_grpc.LeaseStub(channel), pb_grpc.KVStub(channel)
    cases = [
        (lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=99), timeout=10), grpc.StatusCode.NOT_FOUND,
         "etcdserver: requested lease not found"),
        (kv.Put(pb.PutRequest(key=b"k", value=b"v", lease=99), timeout=10), grpc.StatusCode.NOT_FOUND,
         "etcdserver: requested lease not found"),
        (lease.LeaseGrant(pb.LeaseGrantRequest(TTL=9_000_000_001), timeout=10), grpc.StatusCode.OUT_OF_RANGE,
         "etcdserver: too large lease TTL"),
    ]
    for call, code, message in cases:
        with pytest.raises(aio.AioRpcError) as caught:
            await wait(call)
        assert (caught.value.code(), caught.value.details()) == (code, message)
    await wait(lease.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=30), timeout=10))
    with pytest.raises(aio.AioRpcError) as caught:
        await wait(lease.LeaseGrant(pb.LeaseGrantRequest(ID=7, TTL=30), timeout=10))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "etcdserver: lease already exists"
    assert _keys(stack) == []


@pytest_twisted.ensureDeferred
async def test_gateway_lease_paths(stack: Stack) -> None:
    status, body = await gateway(stack, "/v3/lease/grant", {"TTL": "30", "ID": "42"})
    assert status == 200 and (body["ID"], body["TTL"]) == ("42", "30") and "revision" in body["header"]
    status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v"), "lease": "42"})
    assert status == 200
    status, body = await gateway(stack, "/v3/lease/keepalive", {"ID": "42"})
    assert status == 200 and (body["result"]["ID"], body["result"]["TTL"]) == ("42", "30")
    status, body = await gateway(stack, "/v3/lease/keepalive", {"ID": "43"})
    assert status == 200 and body["result"]["ID"] == "43" and "TTL" not in body["result"]
    for path in ("/v3/lease/timetolive", "/v3/kv/lease/timetolive"):
        status, body = await gateway(stack, path, {"ID": "42", "keys": True})
        assert status == 200 and body["grantedTTL"] == "30" and body["keys"] == [b64(b"k")]
    status, body = await gateway(stack, "/v3/lease/timetolive", {"ID": "43"})
    assert status == 200 and body["TTL"] == "-1"
    for path in ("/v3/lease/leases", "/v3/kv/lease/leases"):
        status, body = await gateway(stack, path, {})
        assert status == 200 and body["leases"] == [{"ID": "42"}]
    status, body = await gateway(stack, "/v3/kv/lease/revoke", {"ID": "42"})
    assert status == 200 and body["header"]["revision"] == "3"
    status, body = await gateway(stack, "/v3/lease/revoke", {"ID": "42"})
    assert (status, body) == (
        404,
        {"error": "etcdserver: requested lease not found", "message": "etcdserver: requested lease not found",
         "code": 5},
    )
    reply = await request("POST", stack.rest_url + "/v3/lease/keepalive", b"{nope")
    assert reply.status == 400
    assert _keys(stack) == []


@pytest_twisted.ensureDeferred
async def test_a_lease_without_keep_alives_expires_and_takes_its_keys(stack: Stack) -> None:
    # The stack's election timeout is 0.1 s: the minimum TTL is 1 s.
    status, body = await gateway(stack, "/v3/lease/grant", {"TTL": "0"})
    assert status == 200 and body["TTL"] == "1"
    lease = body["ID"]
    await gateway(stack, "/v3/kv/put", {"key": b64(b"x"), "value": b64(b"1"), "lease": lease})
    await gateway(stack, "/v3/kv/put", {"key": b64(b"y"), "value": b64(b"1"), "lease": lease})
    await wait_for(lambda: _keys(stack) == [], timeout=5, what="the lease to expire")
    status, body = await gateway(stack, "/v3/lease/timetolive", {"ID": lease})
    assert body["TTL"] == "-1"
    with stack.replication.view() as state:
        assert state.revision == 4  # grant 1, puts 2 and 3, both deletes at 4
