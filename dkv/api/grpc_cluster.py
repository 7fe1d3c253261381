# test-case-name: tests.test_membership
"""The gRPC ``dkv.v0.Cluster`` service: membership and leadership, mirroring
the REST routes under /v0/members and /v0/leader; and the lease calls a
follower forwards to its leader (``dkv.node_leases``).

It is also the peers' way to join and to forward membership changes, so
with peer TLS on its membership and leadership calls take only callers
with a peer certificate (``dkv.tls.peer_guard``); a node asking to join
(an AddMember not forwarded) must hold one naming the host it asks to be
added at. Clients change membership through /v0/members or etcd's
``Cluster`` service instead."""

from __future__ import annotations

from typing import Any

from grpc import aio

from dkv.api.grpc_kv import abort, outcome, ready_caller, register_parsed
from dkv.auth.node_auth import v0_error
from dkv.mvcc.errors import EtcdError
from dkv.node import Node
from dkv.pb import kv_pb2, kv_pb2_grpc
from dkv.transport.grpc_peer import PeerGuard


def _forwarded(context: aio.ServicerContext) -> bool:
    return any(k == "dkv-forwarded" for k, _ in (context.invocation_metadata() or ()))


async def _client(node: Node, context: aio.ServicerContext, method: str, peer: bool = False) -> Node:
    """node carrying the call's token; a call from a client (not forwarded
    by a member, which checked it, nor from a peer whose certificate the
    peer CA signed: ``peer``) needs the root role (auth enabled)."""
    caller_node = await ready_caller(node, context)
    if not _forwarded(context) and not peer:
        try:
            caller_node.authorize_root()
        except EtcdError as e:
            await abort(context, v0_error(e), method)
    return caller_node


def _members(view: dict[str, Any]) -> kv_pb2.MembersResponse:
    return kv_pb2.MembersResponse(
        members=[kv_pb2.Member(**m) for m in view["members"]],
        leader_id=view["leader_id"],
        cluster_id=view["cluster_id"],
    )


class ClusterServicer(kv_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node, guard: PeerGuard | None = None) -> None:
        self.node = node
        self.guard = guard

    async def Members(self, request, context):  # noqa: N802 - gRPC names
        return _members(self.node.members())

    async def AddMember(self, request, context):  # noqa: N802
        forward = not _forwarded(context)
        if self.guard is not None:
            # A node joining (not a forwarded call) must be who it says it is.
            await self.guard.admit(context, "Cluster/AddMember", address=request.address if forward else None)
        # A node that joins with --join has no user: with peer TLS its
        # certificate (just checked) is what lets it in, as a member's.
        node = await _client(self.node, context, "AddMember", peer=self.guard is not None)
        d = node.add_member(request.id, request.address, request.learner, forward=forward)
        return _members(await outcome(context, "AddMember", d))

    async def PromoteMember(self, request, context):  # noqa: N802
        if self.guard is not None:
            await self.guard.admit(context, "Cluster/PromoteMember")
        node = await _client(self.node, context, "PromoteMember")
        d = node.promote_member(request.id, forward=not _forwarded(context))
        return _members(await outcome(context, "PromoteMember", d))

    async def RemoveMember(self, request, context):  # noqa: N802
        if self.guard is not None:
            await self.guard.admit(context, "Cluster/RemoveMember")
        node = await _client(self.node, context, "RemoveMember")
        d = node.remove_member(request.id, forward=not _forwarded(context))
        return _members(await outcome(context, "RemoveMember", d))

    async def TransferLeader(self, request, context):  # noqa: N802
        if self.guard is not None:
            await self.guard.admit(context, "Cluster/TransferLeader")
        node = await _client(self.node, context, "TransferLeader")
        d = node.transfer_leader(request.to or None, forward=not _forwarded(context))
        view = await outcome(context, "TransferLeader", d)
        return kv_pb2.TransferLeaderResponse(leader_id=view["leader_id"])

    async def LeaseKeepAlive(self, request, context):  # noqa: N802 - a follower forwarding (dkv.node_leases)
        d = self.node.leases.keep_alive(request, forward=not _forwarded(context))
        return await outcome(context, "LeaseKeepAlive", d)

    async def LeaseTimeToLive(self, request, context):  # noqa: N802
        d = self.node.leases.time_to_live(request, forward=not _forwarded(context))
        return await outcome(context, "LeaseTimeToLive", d)


def register(server: aio.Server, node: Node, guard: PeerGuard | None = None) -> None:
    register_parsed(server, ClusterServicer(node, guard), kv_pb2, "Cluster")
