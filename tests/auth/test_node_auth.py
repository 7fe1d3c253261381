"""Authentication and authorization on a real single-node stack: the Auth
service on the JSON gateway and gRPC, the checks of /v0, /v3 and gRPC with
their codes and statuses, tokens, and the auth state through the log."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from dkv.pb import kv_pb2, kv_pb2_grpc
from tests.conftest import Stack, start_stack
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


async def gateway(stack: Stack, path: str, body: Any, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {b"authorization": [token.encode()]} if token else None
    reply = await request("POST", stack.rest_url + path, json.dumps(body).encode(), headers)
    return reply.status, reply.body


async def ok(stack: Stack, path: str, body: Any, token: str | None = None) -> dict[str, Any]:
    status, answer = await gateway(stack, path, body, token)
    assert status == 200, (path, answer)
    return answer


async def token_of(stack: Stack, name: str, password: str) -> str:
    return str((await ok(stack, "/v3/auth/authenticate", {"name": name, "password": password}))["token"])


async def set_up(stack: Stack) -> tuple[str, str]:
    """root (role root), alice (READ on /app/), auth enabled: (root's token, alice's)."""
    await ok(stack, "/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    await ok(stack, "/v3/auth/role/add", {"name": "root"})
    await ok(stack, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    await ok(stack, "/v3/auth/role/add", {"name": "reader"})
    perm = {"permType": "READ", "key": b64(b"/app/"), "range_end": b64(b"/app0")}
    await ok(stack, "/v3/auth/role/grant", {"name": "reader", "perm": perm})
    await ok(stack, "/v3/auth/user/add", {"name": "alice", "password": "pw"})
    await ok(stack, "/v3/auth/user/grant", {"user": "alice", "role": "reader"})
    await ok(stack, "/v3/kv/put", {"key": b64(b"/app/x"), "value": b64(b"1")})
    await ok(stack, "/v3/kv/put", {"key": b64(b"/other"), "value": b64(b"2")})
    await ok(stack, "/v3/auth/enable", {})
    return await token_of(stack, "root", "rootpw"), await token_of(stack, "alice", "pw")


def etcd_error(message: str, code: int) -> dict[str, Any]:
    return {"error": message, "message": message, "code": code}


DENIED = etcd_error("etcdserver: permission denied", 7)
NO_USER = etcd_error("etcdserver: user name is empty", 3)
BAD_TOKEN = etcd_error("etcdserver: invalid auth token", 16)


@pytest_twisted.ensureDeferred
async def test_enabling_needs_root_with_the_root_role(stack: Stack) -> None:
    # FAILED_PRECONDITION: grpc-gateway v1 answers 412
    assert await gateway(stack, "/v3/auth/enable", {}) == (412, etcd_error("etcdserver: root user does not exist", 9))
    await ok(stack, "/v3/auth/user/add", {"name": "root", "password": "x"})
    status, body = await gateway(stack, "/v3/auth/enable", {})
    assert body["error"] == "etcdserver: root user does not have root role"
    assert await gateway(stack, "/v3/auth/authenticate", {"name": "root", "password": "x"}) == (
        412,
        etcd_error("etcdserver: authentication is not enabled", 9),
    )


@pytest_twisted.ensureDeferred
async def test_the_gateway_answers_by_permission_as_etcds(stack: Stack) -> None:
    root, alice = await set_up(stack)
    found = await ok(stack, "/v3/kv/range", {"key": b64(b"/app/x")}, alice)
    assert found["kvs"][0]["value"] == b64(b"1")
    await ok(stack, "/v3/kv/range", {"key": b64(b"/app/"), "range_end": b64(b"/app0")}, alice)
    assert await gateway(stack, "/v3/kv/put", {"key": b64(b"/app/x"), "value": "eA=="}, alice) == (403, DENIED)
    assert await gateway(stack, "/v3/kv/range", {"key": b64(b"/other")}, alice) == (403, DENIED)
    every = {"key": b64(b"\x00"), "range_end": b64(b"\x00")}
    assert await gateway(stack, "/v3/kv/range", every, alice) == (403, DENIED)
    assert await gateway(stack, "/v3/kv/range", {"key": b64(b"/app/x")}) == (400, NO_USER)
    assert await gateway(stack, "/v3/kv/range", {"key": b64(b"/app/x")}, "bogus.1") == (401, BAD_TOKEN)
    await ok(stack, "/v3/kv/range", every, "Bearer " + root)
    txn = {
        "compare": [{"key": b64(b"/app/x"), "target": "VALUE", "result": "EQUAL", "value": b64(b"1")}],
        "success": [{"request_range": {"key": b64(b"/app/x")}}],
        "failure": [{"request_put": {"key": b64(b"/app/x"), "value": "eA=="}}],
    }
    assert await gateway(stack, "/v3/kv/txn", txn, alice) == (403, DENIED)  # a write on the path not taken
    del txn["failure"]
    assert (await ok(stack, "/v3/kv/txn", txn, alice))["succeeded"] is True
    assert await gateway(stack, "/v3/auth/user/list", {}, alice) == (403, DENIED)
    assert (await ok(stack, "/v3/auth/user/get", {"name": "alice"}, alice))["roles"] == ["reader"]
    assert await gateway(stack, "/v3/maintenance/hashkv", {}, alice) == (403, DENIED)
    await ok(stack, "/v3/maintenance/status", {})
    assert (await ok(stack, "/v3/auth/user/list", {}, root))["users"] == ["alice", "root"]
    role = await ok(stack, "/v3/auth/role/get", {"role": "reader"}, root)
    assert role["perm"] == [{"key": b64(b"/app/"), "range_end": b64(b"/app0")}]  # READ is the default: omitted
    assert stack.node.auth.failures["denied"] >= 5
    assert stack.node.auth.failures["no_user"] >= 1 and stack.node.auth.failures["bad_token"] >= 1


@pytest_twisted.ensureDeferred
async def test_v0_answers_401_and_403(stack: Stack) -> None:
    root, alice = await set_up(stack)
    url = f"{stack.rest_url}/v0/kv/key/{b64(b'/app/x')}"
    assert (await request("GET", url)).status == 401
    assert (await request("GET", url, headers={b"authorization": [b"nope"]})).status == 401
    reply = await request("GET", url, headers={b"authorization": [alice.encode()]})
    assert (reply.status, reply.body["value"]) == (200, b64(b"1"))
    other = f"{stack.rest_url}/v0/kv/key/{b64(b'/other')}"
    reply = await request("GET", other, headers={b"authorization": [alice.encode()]})
    assert (reply.status, reply.body) == (403, {"error": "permission denied", "code": 7})
    body = json.dumps({"key": b64(b"/app/x"), "value": b64(b"2")}).encode()
    assert (await request("POST", f"{stack.rest_url}/v0/kv", body, {b"authorization": [alice.encode()]})).status == 403
    assert (await request("POST", f"{stack.rest_url}/v0/kv", body, {b"authorization": [root.encode()]})).status == 200
    transfer = f"{stack.rest_url}/v0/leader/transfer"
    assert (await request("POST", transfer, b"{}", {b"authorization": [alice.encode()]})).status == 403
    watch = f"{stack.rest_url}/v0/watch?key={b64(b'/other')}"
    assert (await request("GET", watch, headers={b"authorization": [alice.encode()]})).status == 403


@pytest_twisted.ensureDeferred
async def test_grpc_uses_the_token_metadata_and_etcds_codes(stack: Stack) -> None:
    root, alice = await set_up(stack)
    async with aio.insecure_channel(stack.rpc_address) as channel:
        kv = pb_grpc.KVStub(channel)
        auth = pb_grpc.AuthStub(channel)
        watch = pb_grpc.WatchStub(channel)
        as_alice = (("token", alice),)
        got = await wait(kv.Range(pb.RangeRequest(key=b"/app/x"), metadata=as_alice))
        assert got.kvs[0].value == b"1"
        for call, code in (
            (kv.Put(pb.PutRequest(key=b"/app/x", value=b"2"), metadata=as_alice), grpc.StatusCode.PERMISSION_DENIED),
            (kv.Range(pb.RangeRequest(key=b"/app/x")), grpc.StatusCode.INVALID_ARGUMENT),
            (kv.Range(pb.RangeRequest(key=b"/app/x"), metadata=(("token", "x.1"),)), grpc.StatusCode.UNAUTHENTICATED),
            (auth.UserList(pb.AuthUserListRequest(), metadata=as_alice), grpc.StatusCode.PERMISSION_DENIED),
            (auth.Authenticate(pb.AuthenticateRequest(name="alice", password="no")), grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(aio.AioRpcError) as caught:
                await wait(call)
            assert caught.value.code() == code
        stream = watch.Watch(metadata=as_alice)
        await wait(stream.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/other"))))
        refused = await wait(stream.read())
        assert (refused.created, refused.canceled, refused.watch_id) == (True, True, -1)
        assert refused.cancel_reason == "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        await wait(stream.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/app/x"))))
        created = await wait(stream.read())
        assert created.created and not created.canceled
        stream.cancel()
        status = await wait(auth.AuthStatus(pb.AuthStatusRequest(), metadata=(("token", root),)))
        assert status.enabled and status.authRevision > 1

        own = kv_pb2_grpc.KVStub(channel)  # dkv.v0.KV: the same rules, its own codes
        assert (await wait(own.Get(kv_pb2.GetRequest(key=b"/app/x"), metadata=as_alice))).value == b"1"
        for call, code in (
            (own.Get(kv_pb2.GetRequest(key=b"/app/x")), grpc.StatusCode.UNAUTHENTICATED),
            (
                own.Put(kv_pb2.PutRequest(key=b"/app/x", value=b"2"), metadata=as_alice),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
        ):
            with pytest.raises(aio.AioRpcError) as caught:
                await wait(call)
            assert caught.value.code() == code


@pytest_twisted.ensureDeferred
async def test_a_password_change_ends_tokens_and_disable_lets_everyone_in(stack: Stack) -> None:
    root, alice = await set_up(stack)
    await ok(stack, "/v3/auth/user/changepw", {"name": "alice", "password": "new"}, alice)  # its own
    assert await gateway(stack, "/v3/kv/range", {"key": b64(b"/app/x")}, alice) == (401, BAD_TOKEN)
    status, _ = await gateway(stack, "/v3/auth/authenticate", {"name": "alice", "password": "pw"})
    assert status == 400
    alice = await token_of(stack, "alice", "new")
    await ok(stack, "/v3/kv/range", {"key": b64(b"/app/x")}, alice)
    assert await gateway(stack, "/v3/auth/disable", {}, alice) == (403, DENIED)
    await ok(stack, "/v3/auth/disable", {}, root)
    await ok(stack, "/v3/kv/put", {"key": b64(b"/other"), "value": b64(b"3")})
    assert len(stack.node.auth.tokens) == 0  # etcd forgets every token


@pytest_twisted.ensureDeferred
async def test_the_log_carries_a_hash_never_the_password(stack: Stack) -> None:
    await ok(stack, "/v3/auth/user/add", {"name": "carol", "password": "plain-secret"})
    with stack.replication.view() as state:
        stored = dict(state.tables.scan("auth.users"))
    assert b"plain-secret" not in stored[b"carol"] and b"scrypt$" in stored[b"carol"]
    entries = stack.store.load().entries  # type: ignore[union-attr]
    assert all(b"plain-secret" not in e.data for e in entries)
    status, body = await gateway(stack, "/v3/auth/user/add", {"name": "dave", "hashedPassword": "$2a$10$x"})
    assert status == 400 and "hashedPassword" in body["error"]
