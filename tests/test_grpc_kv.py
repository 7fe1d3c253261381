"""The gRPC KV API (dkv.api.grpc_kv, dkv.v0.KV) against a real single-node stack.

A real ``grpc.aio`` channel runs on the reactor's asyncio loop; every call is
bridged into the Deferred-driven test with ``Deferred.fromFuture``. After each
rejected call the test checks that nothing was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import attrs
import grpc
import pytest
import pytest_twisted
from grpc import aio
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from dkv.config import Limits
from dkv.pb import kv_pb2, kv_pb2_grpc
from tests.api_stacks import start_leaderless_stack, start_stuck_leader_stack
from tests.conftest import Stack, start_stack

T = TypeVar("T")

MAX_KEY = Limits().max_key_bytes
MAX_BODY = Limits().max_body_bytes
#: Generous, so that a DEADLINE_EXCEEDED seen by a test comes from the server.
TIMEOUT = 20.0


# -- helpers -------------------------------------------------------------------


async def wait(awaitable: Awaitable[T]) -> T:
    """Await an asyncio awaitable (a gRPC call) from a Deferred-driven coroutine."""
    return await defer.Deferred.fromFuture(asyncio.ensure_future(awaitable))


@attrs.define
class Client:
    """A KV stub on a real channel to one stack."""

    stack: Stack
    channel: aio.Channel
    stub: kv_pb2_grpc.KVStub

    async def put(self, key: bytes, value: bytes) -> kv_pb2.PutResponse:
        return await wait(self.stub.Put(kv_pb2.PutRequest(key=key, value=value), timeout=TIMEOUT))

    async def get(self, key: bytes, consistency: int = kv_pb2.LINEARIZABLE) -> kv_pb2.GetResponse:
        return await wait(
            self.stub.Get(kv_pb2.GetRequest(key=key, consistency=consistency), timeout=TIMEOUT)
        )

    async def delete(self, key: bytes) -> kv_pb2.DeleteResponse:
        return await wait(self.stub.Delete(kv_pb2.DeleteRequest(key=key), timeout=TIMEOUT))

    async def status(self) -> kv_pb2.StatusResponse:
        return await wait(self.stub.Status(kv_pb2.StatusRequest(), timeout=TIMEOUT))

    async def close(self) -> None:
        await wait(self.channel.close())


def connect(stack: Stack) -> Client:
    """A client whose channel accepts large answers (values near the limit)."""
    channel = aio.insecure_channel(
        stack.rpc_address,
        options=[("grpc.max_receive_message_length", 128 << 20), ("grpc.max_send_message_length", 128 << 20)],
    )
    return Client(stack, channel, kv_pb2_grpc.KVStub(channel))


async def rpc_error(awaitable: Awaitable[Any]) -> aio.AioRpcError:
    """The error the call fails with (failing the test if it succeeds)."""
    try:
        result = await awaitable
    except aio.AioRpcError as e:
        return e
    raise AssertionError(f"expected an error, got {result!r}")


def assert_status(error: aio.AioRpcError, code: grpc.StatusCode, details: str | None = None) -> None:
    assert error.code() == code, (error.code(), error.details())
    if details is not None:
        assert error.details() == details, error.details()


def indexes(stack: Stack) -> tuple[int, int, int]:
    """(last, commit, applied): they move whenever anything is written."""
    st = stack.node.status()
    return st["last_index"], st["commit_index"], st["applied_index"]


async def _client_for(stack: Stack, stoppers: list) -> AsyncIterator[Client]:
    client = connect(stack)
    try:
        yield client
    finally:
        await client.close()
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.async_yield_fixture
async def client(tmp_path) -> AsyncIterator[Client]:
    stack, stoppers = await start_stack(tmp_path)
    async for c in _client_for(stack, stoppers):
        yield c


@pytest_twisted.async_yield_fixture
async def small_client(tmp_path) -> AsyncIterator[Client]:
    """Limits: 16-byte keys, 256-byte messages."""
    stack, stoppers = await start_stack(tmp_path, limits=Limits(max_key_bytes=16, max_body_bytes=256))
    async for c in _client_for(stack, stoppers):
        yield c


@pytest_twisted.async_yield_fixture
async def leaderless(tmp_path) -> AsyncIterator[Client]:
    stack, stoppers = await start_leaderless_stack(tmp_path, request_timeout=0.3)
    async for c in _client_for(stack, stoppers):
        yield c


@pytest_twisted.async_yield_fixture
async def stuck_leader(tmp_path) -> AsyncIterator[Client]:
    stack, stoppers = await start_stuck_leader_stack(tmp_path, request_timeout=0.3)
    async for c in _client_for(stack, stoppers):
        yield c


@pytest.fixture
def grpc_log() -> Iterator[list[dict]]:
    """"rejected" events logged by dkv.api.grpc while the test runs."""
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "dkv.api.grpc" and str(event.get("log_format", "")).startswith(
            "rejected"
        ):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


# -- round trips ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_get_delete(client: Client) -> None:
    stack = client.stack
    before = indexes(stack)
    assert await client.put(b"k", b"v") == kv_pb2.PutResponse()
    after = indexes(stack)
    assert after[0] == before[0] + 1
    assert after[1] == after[2] == after[0]  # durable and applied when acknowledged
    assert stack.replication.read(b"k") == b"v"

    for consistency in (kv_pb2.LINEARIZABLE, kv_pb2.SERIALIZABLE):
        reply = await client.get(b"k", consistency)
        assert (reply.key, reply.value) == (b"k", b"v")

    assert await client.delete(b"k") == kv_pb2.DeleteResponse()
    assert stack.replication.read(b"k") is None
    assert indexes(stack)[0] == after[0] + 1
    assert_status(await rpc_error(client.get(b"k")), grpc.StatusCode.NOT_FOUND, "key not found")


@pytest_twisted.ensureDeferred
async def test_overwrite_and_binary_data(client: Client) -> None:
    key = bytes(range(256))
    for value in (b"", b"\x00", bytes(range(255, -1, -1)) * 100, b"last"):
        await client.put(key, value)
        reply = await client.get(key)
        assert (reply.key, reply.value) == (key, value)


@pytest_twisted.ensureDeferred
async def test_get_absent_key(client: Client, grpc_log: list[dict]) -> None:
    for consistency in (kv_pb2.LINEARIZABLE, kv_pb2.SERIALIZABLE):
        error = await rpc_error(client.get(b"absent", consistency))
        assert_status(error, grpc.StatusCode.NOT_FOUND, "key not found")


@pytest_twisted.ensureDeferred
async def test_delete_absent_key(client: Client) -> None:
    before = indexes(client.stack)
    assert await client.delete(b"never-written") == kv_pb2.DeleteResponse()
    assert await client.delete(b"never-written") == kv_pb2.DeleteResponse()
    assert indexes(client.stack)[0] == before[0] + 2


@pytest_twisted.ensureDeferred
async def test_rest_and_grpc_see_the_same_data(client: Client) -> None:
    """The two APIs are views of one store."""
    import base64
    import json

    import treq

    await client.put(b"shared", b"\xff\xfe")
    resp = await treq.get(f"{client.stack.rest_url}/v0/kv/key/{base64.urlsafe_b64encode(b'shared').decode()}",
                          persistent=False)
    body = json.loads(await treq.content(resp))
    assert body == {"key": base64.b64encode(b"shared").decode(), "value": base64.b64encode(b"\xff\xfe").decode()}


# -- status --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status(client: Client) -> None:
    await client.put(b"k", b"v")
    st = await client.status()
    assert st.id == "a"
    assert st.role == "leader"
    assert st.leader_id == "a"
    assert st.term >= 1
    assert st.commit_index == st.applied_index == st.last_index >= 3
    assert st.first_index == 1
    assert st.snapshot_index == 0
    assert [(m.id, m.address, m.voter, m.match_index) for m in st.members] == [
        ("a", "127.0.0.1:1", True, st.last_index)
    ]
    # The same view as REST's /v0/status.
    rest = client.stack.node.status()
    assert {k: getattr(st, k) for k in rest if k != "members"} == {k: v for k, v in rest.items() if k != "members"}


# -- invalid arguments and limits ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_empty_key(client: Client, grpc_log: list[dict]) -> None:
    before = indexes(client.stack)
    for call in (
        client.put(b"", b"v"),
        client.get(b""),
        client.get(b"", kv_pb2.SERIALIZABLE),
        client.delete(b""),
    ):
        assert_status(await rpc_error(call), grpc.StatusCode.INVALID_ARGUMENT, "key must not be empty")
    assert indexes(client.stack) == before
    assert len(grpc_log) == 4
    assert {e["method"] for e in grpc_log} == {"Put", "Get", "Delete"}
    assert all(e["code"] == "INVALID_ARGUMENT" and e["log_level"].name == "info" for e in grpc_log)


@pytest_twisted.ensureDeferred
async def test_key_too_large(client: Client, grpc_log: list[dict]) -> None:
    key = b"k" * (MAX_KEY + 1)
    before = indexes(client.stack)
    for call in (client.put(key, b"v"), client.get(key), client.get(key, kv_pb2.SERIALIZABLE), client.delete(key)):
        assert_status(
            await rpc_error(call),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"key is {MAX_KEY + 1} bytes; the limit is {MAX_KEY}",
        )
    assert indexes(client.stack) == before
    assert len(grpc_log) == 4


@pytest_twisted.ensureDeferred
async def test_value_at_the_limit(client: Client) -> None:
    value = bytes(i % 251 for i in range(MAX_BODY))
    await client.put(b"big", value)
    reply = await client.get(b"big")
    assert reply.value == value


@pytest_twisted.ensureDeferred
async def test_value_over_the_limit(client: Client) -> None:
    before = indexes(client.stack)
    error = await rpc_error(client.put(b"big", b"x" * (MAX_BODY + 1)))
    assert_status(
        error, grpc.StatusCode.RESOURCE_EXHAUSTED, f"value is {MAX_BODY + 1} bytes; the limit is {MAX_BODY}"
    )
    assert indexes(client.stack) == before
    assert client.stack.replication.read(b"big") is None


@pytest_twisted.ensureDeferred
async def test_message_over_the_transport_limit(client: Client) -> None:
    """The RPC port also carries Raft traffic, so gRPC itself accepts messages
    up to 64 MiB; anything bigger is refused before dkv sees it."""
    from dkv.transport.grpc_peer import MAX_MESSAGE_BYTES

    before = indexes(client.stack)
    error = await rpc_error(client.put(b"huge", b"x" * (MAX_MESSAGE_BYTES + 1)))
    assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert indexes(client.stack) == before
    # The server is fine afterwards.
    await client.put(b"small", b"v")
    assert (await client.get(b"small")).value == b"v"


@pytest_twisted.ensureDeferred
async def test_configured_limits(small_client: Client) -> None:
    client = small_client
    await client.put(b"k" * 16, b"v" * 256)
    assert (await client.get(b"k" * 16)).value == b"v" * 256
    before = indexes(client.stack)
    for call in (client.put(b"k" * 17, b"v"), client.get(b"k" * 17), client.delete(b"k" * 17)):
        assert_status(await rpc_error(call), grpc.StatusCode.RESOURCE_EXHAUSTED, "key is 17 bytes; the limit is 16")
    assert_status(
        await rpc_error(client.put(b"k", b"v" * 257)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "value is 257 bytes; the limit is 256",
    )
    assert indexes(client.stack) == before


# -- concurrency ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrent_puts(client: Client) -> None:
    n = 50
    before = indexes(client.stack)
    await defer.gatherResults(
        [defer.ensureDeferred(client.put(b"key-%d" % i, b"value-%d" % i)) for i in range(n)]
    )
    assert indexes(client.stack)[0] == before[0] + n
    replies = await defer.gatherResults([defer.ensureDeferred(client.get(b"key-%d" % i)) for i in range(n)])
    assert [(r.key, r.value) for r in replies] == [(b"key-%d" % i, b"value-%d" % i) for i in range(n)]


# -- no leader, unknown outcome ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_no_leader(leaderless: Client, grpc_log: list[dict]) -> None:
    from twisted.internet import reactor

    client = leaderless
    before = indexes(client.stack)
    start = reactor.seconds()
    for call in (client.put(b"k", b"v"), client.delete(b"k"), client.get(b"k")):
        assert_status(await rpc_error(call), grpc.StatusCode.UNAVAILABLE, "no leader")
    # The three (concurrent) calls waited for a leader for the request
    # timeout (0.3 s here, checked on 0.01 s ticks: a request ends between
    # 0.29 and 0.3 s), no longer.
    assert 0.29 <= reactor.seconds() - start < 0.3 + 2
    assert indexes(client.stack) == before
    assert client.stack.replication.read(b"k") is None
    assert [e["code"] for e in grpc_log] == ["UNAVAILABLE"] * 3
    # An unknown consistency value is served as linearizable, never as a stale read.
    assert_status(await rpc_error(client.get(b"k", 7)), grpc.StatusCode.UNAVAILABLE, "no leader")
    # A serializable read needs no leader.
    assert_status(await rpc_error(client.get(b"k", kv_pb2.SERIALIZABLE)), grpc.StatusCode.NOT_FOUND)
    st = await client.status()
    assert (st.role, st.leader_id) == ("pre-candidate", "")
    assert [m.id for m in st.members] == ["a", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_outcome_unknown(stuck_leader: Client) -> None:
    from twisted.internet import reactor

    client = stuck_leader
    start = reactor.seconds()
    error = await rpc_error(client.put(b"k", b"v"))
    elapsed = reactor.seconds() - start
    assert_status(error, grpc.StatusCode.DEADLINE_EXCEEDED, "outcome unknown")
    assert 0.25 <= elapsed < 5  # the server's request timeout (0.3 s), not the client's deadline
    assert_status(await rpc_error(client.delete(b"k")), grpc.StatusCode.DEADLINE_EXCEEDED, "outcome unknown")
    st = await client.status()
    assert st.role == "leader"
    assert st.commit_index < st.last_index
    assert client.stack.replication.read(b"k") is None
    # Reads cannot be confirmed by a quorum either: UNAVAILABLE, not a stale answer.
    assert_status(await rpc_error(client.get(b"k")), grpc.StatusCode.UNAVAILABLE)


@pytest_twisted.ensureDeferred
async def test_writes_refused_by_admission_control_are_refused_before_their_request_is_parsed(
    client: Client,
) -> None:
    """While admission control refuses writes, a gRPC write (dkv.v0's Put and
    Delete, etcd's Put and DeleteRange) is answered RESOURCE_EXHAUSTED before
    its request is read: even bytes that are no message at all get the
    refusal, not INVALID_ARGUMENT. Reads and other calls are served."""
    await client.put(b"k", b"v")
    admission = client.stack.replication.admission
    admission.limits = attrs.evolve(admission.limits, max_pending_proposals=0)  # every write refused
    before = indexes(client.stack)
    garbage = b"\xff\xff\xff"
    for method, details in [
        ("/dkv.v0.KV/Put", None),
        ("/dkv.v0.KV/Delete", None),
        ("/etcdserverpb.KV/Put", "etcdserver: too many requests"),
        ("/etcdserverpb.KV/DeleteRange", "etcdserver: too many requests"),
    ]:
        fn = client.channel.unary_unary(method, lambda b: b, lambda b: b)
        error = await rpc_error(wait(fn(garbage, timeout=TIMEOUT)))
        assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        assert dict(error.trailing_metadata() or ()).get("dkv-error", "Overloaded") == "Overloaded", method
    assert indexes(client.stack) == before
    assert admission.refused["pending_proposals"] == 4
    range_fn = client.channel.unary_unary("/etcdserverpb.KV/Range", lambda b: b, lambda b: b)
    error = await rpc_error(wait(range_fn(garbage, timeout=TIMEOUT)))
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)  # a read is parsed (and refused as malformed)
    assert (await client.get(b"k")).value == b"v"
