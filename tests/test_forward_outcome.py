"""A forwarded call's outcome is carried by structure (dkv.transport.cluster_client).

A real in-process gRPC server answers ``dkv.v0.Cluster/TransferLeader`` as
each test asks: with a dkv error through ``dkv.api.grpc_kv.abort`` (which
adds ``dkv-outcome`` and ``dkv-error`` trailing metadata), with a bare status
and no metadata, or never. The client must say "not applied" (NoLeader, 503)
only when the leader said so or the call was never sent, and "unknown"
(OutcomeUnknown, 504) otherwise, whatever the messages say; and a refusal
keeps its kind (429, 507 or 413, all RESOURCE_EXHAUSTED) by its name.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.aio import deferred_from
from dkv.api.grpc_kv import abort
from dkv.auth.node_auth import v0_error
from dkv.errors import (
    DkvError,
    FailedPrecondition,
    MemberNotFound,
    NoLeader,
    NoSpace,
    OutcomeUnknown,
    Overloaded,
    RequestTimeout,
    TooLarge,
)
from dkv.mvcc import errors as etcd_errors
from dkv.pb import kv_pb2, kv_pb2_grpc
from dkv.testing.proxy import ProxyHub
from dkv.transport.cluster_client import ClusterClient

Answer = Callable[[aio.ServicerContext], Awaitable[None]]


async def _answer(context: aio.ServicerContext) -> None:
    """Answer normally."""


class _Leader(kv_pb2_grpc.ClusterServicer):
    """Answers TransferLeader with whatever ``answer`` does."""

    def __init__(self) -> None:
        self.answer: Answer = _answer
        self.calls = 0

    async def TransferLeader(self, request, context):  # noqa: N802 - gRPC names
        self.calls += 1
        await self.answer(context)
        return kv_pb2.TransferLeaderResponse(leader_id="a")


async def _serve(leader: _Leader) -> tuple[aio.Server, str]:
    server = aio.server()
    kv_pb2_grpc.add_ClusterServicer_to_server(leader, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _failure(client: ClusterClient, address: str) -> DkvError:
    """The DkvError a forwarded TransferLeader to address fails with."""
    result = await deferred_from(_settled(client, address))
    assert isinstance(result, DkvError), f"expected a failure, got {result!r}"
    return result


async def _settled(client: ClusterClient, address: str) -> Any:
    try:
        return await client._call(address, "TransferLeader", kv_pb2.TransferLeaderRequest(to="b"))
    except DkvError as e:
        return e  # an answer, not a failure, to the Deferred that awaits it


def _aborting(error: DkvError) -> Answer:
    async def answer(context: aio.ServicerContext) -> None:
        await abort(context, error, "TransferLeader")

    return answer


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NoLeader(), NoLeader),
        (NoLeader("no leader: election in progress"), NoLeader),
        (OutcomeUnknown("leader changed while the change was in flight"), OutcomeUnknown),
        # The message must not matter: "no leader" text on an unknown outcome stays unknown.
        (OutcomeUnknown("no leader (failed to connect)"), OutcomeUnknown),
        (FailedPrecondition("member b is not a voter"), FailedPrecondition),
        (MemberNotFound("no member c"), MemberNotFound),
        # DEADLINE_EXCEEDED that the leader says was not applied is not "unknown".
        (RequestTimeout(), NoLeader),
        # Three kinds share RESOURCE_EXHAUSTED: the answer's dkv-error names which.
        (Overloaded("too many requests: 9 writes are waiting", reason="pending_proposals"), Overloaded),
        (NoSpace(), NoSpace),
        (TooLarge("value is 2000000 bytes"), TooLarge),
    ],
)
@pytest_twisted.ensureDeferred
async def test_the_leaders_answer_carries_its_outcome(error: DkvError, expected: type[DkvError]) -> None:
    servicer = _Leader()
    servicer.answer = _aborting(error)
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(10.0)
    try:
        got = await _failure(client, address)
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert type(got) is expected
    assert got.message == error.message
    assert servicer.calls == 1


@pytest_twisted.ensureDeferred
async def test_a_bare_unavailable_without_metadata_is_unknown_whatever_it_says() -> None:
    """A status the leader's dkv layer did not give (no ``dkv-outcome``),
    after the call was sent: its text is not read."""

    async def answer(context: aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no leader (failed to connect to all addresses)")

    servicer = _Leader()
    servicer.answer = answer
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(10.0)
    try:
        got = await _failure(client, address)
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert isinstance(got, OutcomeUnknown)


@pytest_twisted.ensureDeferred
async def test_a_call_the_leader_never_answers_is_unknown() -> None:
    """Sent, then nothing before the deadline: it may have been applied."""

    async def answer(context: aio.ServicerContext) -> None:
        await asyncio.Event().wait()  # never answers

    servicer = _Leader()
    servicer.answer = answer
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(1.0)
    try:
        got = await _failure(client, address)
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert isinstance(got, OutcomeUnknown)
    assert servicer.calls == 1


@pytest_twisted.ensureDeferred
async def test_a_call_lost_when_the_leader_goes_away_is_unknown() -> None:
    """Sent, then the leader's server stops (connection lost) mid-call."""
    started = asyncio.Event()

    async def answer(context: aio.ServicerContext) -> None:
        started.set()
        await asyncio.Event().wait()

    servicer = _Leader()
    servicer.answer = answer
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(30.0)
    try:
        pending = asyncio.ensure_future(_settled(client, address))
        await deferred_from(started.wait())
        await deferred_from(server.stop(0))
        result = await deferred_from(pending)
    finally:
        await deferred_from(client.close())
    assert isinstance(result, OutcomeUnknown)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nobody listens there


@pytest_twisted.ensureDeferred
async def test_an_unreachable_leader_is_not_applied() -> None:
    """The channel never connected, so nothing was sent: safe to retry."""
    client = ClusterClient(5.0)
    address = f"127.0.0.1:{_unused_port()}"
    try:
        got = await _failure(client, address)
        again = await _failure(client, address)  # the channel in its failed state
    finally:
        await deferred_from(client.close())
    assert isinstance(got, NoLeader) and address in got.message
    assert isinstance(again, NoLeader)


@pytest_twisted.ensureDeferred
async def test_through_a_proxy_that_cannot_reach_the_leader_nothing_is_sent() -> None:
    """The harness's fault proxy accepts a connection before it dials its
    target, so TCP alone says nothing. gRPC counts a channel connected only
    once the server's HTTP/2 settings came back through it: a forward via a
    proxy whose leader is not listening yet (the proxy resets) or cannot be
    reached (the proxy holds the connection) is never sent, NoLeader (503);
    once the leader listens, the same address answers, and the leader saw
    the call once."""
    leader_port = _unused_port()
    with ProxyHub() as hub:
        resetting, holding = hub.proxy(leader_port), hub.proxy(leader_port)
        holding.blackhole()
        client = ClusterClient(1.0)
        try:
            reset = await _failure(client, f"127.0.0.1:{resetting.port}")
            held = await _failure(client, f"127.0.0.1:{holding.port}")
            servicer = _Leader()
            server = aio.server()
            kv_pb2_grpc.add_ClusterServicer_to_server(servicer, server)
            server.add_insecure_port(f"127.0.0.1:{leader_port}")
            await deferred_from(server.start())
            try:
                holding.pass_through()
                response = await deferred_from(_settled(client, f"127.0.0.1:{holding.port}"))
            finally:
                await deferred_from(server.stop(0))
        finally:
            await deferred_from(client.close())
    assert isinstance(reset, NoLeader), reset
    assert isinstance(held, NoLeader), held
    assert response.leader_id == "a" and servicer.calls == 1


@pytest_twisted.ensureDeferred
async def test_a_leader_that_answers_gives_its_response() -> None:
    servicer = _Leader()
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(10.0)
    try:
        response = await client.call(address, "TransferLeader", kv_pb2.TransferLeaderRequest(to="b"))
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert response.leader_id == "a"


@pytest_twisted.ensureDeferred
async def test_an_overloaded_leader_answers_429_with_its_reason() -> None:
    """An admission-control refusal forwarded back stays a 429 with
    Retry-After and its reason: certainly not applied, safe to retry."""
    servicer = _Leader()
    servicer.answer = _aborting(Overloaded("too many requests: 9 writes are waiting", reason="pending_proposals"))
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(10.0)
    try:
        got = await _failure(client, address)
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert isinstance(got, Overloaded)
    assert (got.http_status, got.grpc_code, got.outcome) == (429, 8, "not-applied")
    assert got.reason == "pending_proposals" and got.retry_after >= 1


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        # An older leader (no dkv-error): the code decides, as before.
        ((("dkv-outcome", "not-applied"),), TooLarge),
        # A name this side does not know: the code decides.
        ((("dkv-outcome", "not-applied"), ("dkv-error", "SomethingNew")), TooLarge),
        ((("dkv-outcome", "not-applied"), ("dkv-error", "NoSpace")), NoSpace),
    ],
)
@pytest_twisted.ensureDeferred
async def test_without_a_known_error_name_the_code_decides(
    metadata: tuple[tuple[str, str], ...], expected: type[DkvError]
) -> None:
    async def answer(context: aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "refused", trailing_metadata=metadata)

    servicer = _Leader()
    servicer.answer = answer
    server, address = await deferred_from(_serve(servicer))
    client = ClusterClient(10.0)
    try:
        got = await _failure(client, address)
    finally:
        await deferred_from(client.close())
        await deferred_from(server.stop(0))
    assert type(got) is expected
    assert got.message == "refused"


@pytest.mark.parametrize(
    ("error", "expected"),
    [(etcd_errors.NoSpace(), NoSpace), (etcd_errors.TooManyRequests(), Overloaded)],
)
def test_etcds_resource_exhausted_errors_keep_their_kind_in_v0(
    error: etcd_errors.EtcdError, expected: type[DkvError]
) -> None:
    """etcd's "no space" and "too many requests" share RESOURCE_EXHAUSTED
    with "too large"; dkv's API answers them 507 and 429, not 413."""
    assert type(v0_error(error)) is expected
