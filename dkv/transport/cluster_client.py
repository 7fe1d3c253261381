# test-case-name: tests.test_membership
"""Calling another node's ``dkv.v0.Cluster`` service: a follower forwarding a
membership change or a leadership transfer to its leader; and asking a
member for etcd's ``Maintenance.Status`` (the status page's view of it).

A forwarded call carries ``dkv-forwarded`` metadata and is never forwarded
again, so two nodes with stale views of the leader cannot bounce a request
between them.

Whether a failed forwarded call was applied is decided by structure, never
by reading messages: a call is sent only once its channel is connected, so
one that could not connect was certainly not applied (NoLeader, 503); the
leader's own refusals say what they are in ``dkv-outcome`` and
``dkv-error`` trailing metadata (``dkv.errors.error_metadata``: an
Overloaded refusal stays a 429, a NoSpace one a 507, though both share
TooLarge's RESOURCE_EXHAUSTED); a call lost after it was sent,
with no such answer, has an unknown outcome (OutcomeUnknown, 504).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from grpc import aio
from twisted.internet.defer import Deferred

from dkv.aio import deferred_from
from dkv.errors import (
    BY_GRPC_CODE,
    BY_NAME,
    ERROR_METADATA,
    NOT_APPLIED,
    OUTCOME_METADATA,
    REASON_METADATA,
    UNKNOWN,
    DkvError,
    NoLeader,
    OutcomeUnknown,
    Overloaded,
)
from dkv.pb import etcd_rpc_pb2, etcd_rpc_pb2_grpc, kv_pb2, kv_pb2_grpc
from dkv.transport.grpc_peer import Credentials, open_channel

FORWARDED = (("dkv-forwarded", "1"),)


class ClusterClient:
    """One channel per address, reused."""

    def __init__(self, timeout: float, credentials: Credentials = lambda: None) -> None:
        self._timeout = timeout
        self._credentials = credentials
        self._channels: dict[str, aio.Channel] = {}

    def call(self, address: str, method: str, request: Any) -> Deferred[Any]:
        """Call method on the node at address; fails with the DkvError its
        status maps to (``to_dkv_error``; NoLeader when it cannot be
        reached, OutcomeUnknown when the call was lost after it was sent)."""
        return deferred_from(self._call(address, method, request))

    def _channel(self, address: str) -> aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self._credentials())
        return channel

    async def _call(self, address: str, method: str, request: Any) -> Any:
        channel = self._channel(address)
        await _connected(channel, address, self._timeout)
        stub = kv_pb2_grpc.ClusterStub(channel)
        try:
            return await getattr(stub, method)(request, timeout=self._timeout, metadata=FORWARDED)
        except aio.AioRpcError as e:
            raise to_dkv_error(e) from None

    def member_status(self, address: str, timeout: float) -> Deferred[etcd_rpc_pb2.StatusResponse]:
        """etcd's ``Maintenance.Status`` of the node at address, within
        timeout seconds; fails with grpc's ``AioRpcError`` (UNAVAILABLE when
        it cannot be reached, DEADLINE_EXCEEDED when it did not answer)."""
        return deferred_from(self._status(address, timeout))

    async def _status(self, address: str, timeout: float) -> etcd_rpc_pb2.StatusResponse:
        stub = etcd_rpc_pb2_grpc.MaintenanceStub(self._channel(address))
        response: etcd_rpc_pb2.StatusResponse = await stub.Status(etcd_rpc_pb2.StatusRequest(), timeout=timeout)
        return response

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(c.close() for c in channels.values()))

    def drop_channels(self) -> None:
        """Open new channels from now on (after a TLS reload); calls on the
        old ones finish first."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            asyncio.ensure_future(channel.close(grace=self._timeout))


async def _connected(channel: aio.Channel, address: str, timeout: float) -> None:
    """Return once channel is connected (READY); raise NoLeader if it fails
    to connect, or does not within timeout seconds: nothing was sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        remaining = deadline - loop.time()
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN) or remaining <= 0:
            raise NoLeader(f"cannot reach the leader at {address}")
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            raise NoLeader(f"cannot reach the leader at {address} (no connection within {timeout:g}s)") from None
        state = channel.get_state(try_to_connect=True)


#: Codes gRPC itself gives a call lost on the way (the connection broke,
#: the deadline passed, the call was cancelled).
_LOST = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def to_dkv_error(error: aio.AioRpcError) -> DkvError:
    """The error a failed forwarded call (sent on a connected channel)
    becomes, by the leader's trailing metadata: ``dkv-outcome`` "unknown" is
    OutcomeUnknown; "not-applied" is the error ``dkv-error`` names (by its
    code when it names none this side knows; NoLeader where that would be
    OutcomeUnknown). Without an outcome (the answer is gRPC's, not the
    leader's), a lost call (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) is
    OutcomeUnknown, and other codes (refused before any handler ran) map as
    the leader's would."""
    details = error.details() or None
    metadata = {key: value for key, value in error.trailing_metadata() or () if isinstance(value, str)}
    said = metadata.get(OUTCOME_METADATA)
    if said == UNKNOWN:
        return OutcomeUnknown(details)
    found = BY_NAME.get(metadata.get(ERROR_METADATA, "")) or BY_GRPC_CODE.get(error.code().value[0], DkvError)
    if said == NOT_APPLIED:
        if found is OutcomeUnknown:
            return NoLeader(details)
        if found is Overloaded:
            return Overloaded(details, reason=metadata.get(REASON_METADATA, ""))
        return found(details)
    if error.code() in _LOST:
        return OutcomeUnknown(f"lost contact with the leader ({details or error.code().name})")
    return found(details)


def join_cluster(
    address: str, node_id: str, advertise: str, timeout: float, credentials: grpc.ChannelCredentials | None = None
) -> tuple[str, list[tuple[str, str, bool]]]:
    """Ask the member at address (over TLS with credentials) to add us as a
    learner; returns the cluster id and the configuration (id, address,
    voter) that includes us.

    Blocking (it runs at start-up, before the reactor): retries while the
    cluster has no leader, up to timeout seconds; raises RuntimeError with a
    readable reason otherwise."""
    deadline = time.monotonic() + timeout
    request = kv_pb2.AddMemberRequest(id=node_id, address=advertise, learner=True)
    last = "no answer"
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        stub = kv_pb2_grpc.ClusterStub(channel)
        while time.monotonic() < deadline:
            try:
                response = stub.AddMember(request, timeout=max(1.0, deadline - time.monotonic()))
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
                if "handshake failed" in (e.details() or "").lower():
                    # We do not trust the member's certificate: waiting will not help.
                    raise RuntimeError(f"TLS: {e.details()}") from None
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    time.sleep(0.5)  # the cluster may be electing a leader; try again
                    continue
                raise RuntimeError(last) from None
            return response.cluster_id, [(m.id, m.address, m.voter) for m in response.members]
    hint = "; with TLS, a member closes connections whose certificate its CAs do not trust" if credentials else ""
    raise RuntimeError(f"gave up after {timeout:.0f}s ({last}{hint})")
