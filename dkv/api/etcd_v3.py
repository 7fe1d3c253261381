# test-case-name: tests.test_etcd_api
"""etcd's v3 API on a dkv node, once for both of its faces.

Every RPC of ``KV``, ``Cluster``, ``Maintenance``, ``Lease`` and ``Auth`` is a function here that
takes the node and the request message and returns the response message (or
a Deferred of it); ``dkv.api.etcd_grpc`` serves them over gRPC and
``dkv.api.etcd_gateway`` over etcd's JSON gateway paths, so the two cannot
drift (etcd's gateway is generated from the same service definitions).
Failures are ``EtcdError``s or ``ApiError``s; ``answer_error`` turns any
exception into the (gRPC code, message) a client receives, as etcd does.

Permissions (auth enabled): the node checks KV requests and membership
changes itself (``dkv.node.Node.authorize``); here, as etcd's maintenance
and lease servers do: Hash, HashKV, Defragment, MoveLeader and Snapshot need
the root role; LeaseRevoke needs WRITE on every key of the lease; the other
lease calls need a valid user; Status, Alarm and MemberList need nothing.

Where dkv differs from etcd (member ids, MemberAdd, Defragment, Hash, the
snapshot file), the README's compatibility table says how.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.threads import deferToThread

from dkv import errors as dkv_errors
from dkv.auth.permissions import Access
from dkv.compaction_steps import compact_in_steps
from dkv.config import ConfigError, parse_address
from dkv.ids import member_id
from dkv.mvcc import errors
from dkv.mvcc.errors import Code, EtcdError
from dkv.mvcc.leases import LeaseReader
from dkv.node import Node
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.storage.snapshot_file import append_trailer

#: The etcd API version dkv speaks (clients pick their paths by it).
ETCD_API_VERSION = "3.4.0"
#: What a lease grant adds to the db, for the quota (etcd's leaseOverhead).
LEASE_GRANT_COST = 64
#: How much of a snapshot one message carries.
SNAPSHOT_CHUNK = 1 << 20


class ApiError(Exception):
    """An answer of our own with a gRPC code and a message."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def answer_error(error: BaseException) -> tuple[int, str]:
    """The (gRPC code, message) a client receives for error, as etcd says it."""
    if isinstance(error, (EtcdError, ApiError)):
        return int(error.code), error.message
    if isinstance(error, dkv_errors.NoLeader):
        return int(errors.NoLeader.code), errors.NoLeader.message
    if isinstance(error, dkv_errors.OutcomeUnknown):
        return int(errors.Timeout.code), errors.Timeout.message
    if isinstance(error, dkv_errors.Overloaded):
        return int(errors.TooManyRequests.code), errors.TooManyRequests.message
    if isinstance(error, dkv_errors.TooLarge):
        return int(errors.RequestTooLarge.code), f"{errors.RequestTooLarge.message}: {error.message}"
    if isinstance(error, dkv_errors.DkvError):
        return error.grpc_code, f"etcdserver: {error.message}"
    return int(Code.UNKNOWN), "etcdserver: internal error"


Handler = Callable[[Node, Any], Any]


def token_from_metadata(metadata: Any) -> str | None:
    """The auth token of a gRPC call (metadata ``token``, as etcd's clients
    send it); None if absent."""
    for key, value in metadata or ():
        if key == "token":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _checked(check: Callable[[], None], then: Callable[[], Any]) -> Deferred[Any]:
    """then()'s answer as a Deferred, if check() passes; its error otherwise."""
    try:
        check()
    except EtcdError as e:
        return fail(e)
    return maybeDeferred(then)


# ---- KV ---------------------------------------------------------------------------


def kv_range(node: Node, request: pb.RangeRequest) -> Deferred[pb.RangeResponse]:
    return node.range(request)


def kv_put(node: Node, request: pb.PutRequest) -> Deferred[pb.PutResponse]:
    return node.write(request)


def kv_delete_range(node: Node, request: pb.DeleteRangeRequest) -> Deferred[pb.DeleteRangeResponse]:
    return node.write(request)


def kv_txn(node: Node, request: pb.TxnRequest) -> Deferred[pb.TxnResponse]:
    return node.write(request)


def kv_compact(node: Node, request: pb.CompactionRequest) -> Deferred[pb.CompactionResponse]:
    """Compaction goes through the log: every member drops the same history
    at the same point, in steps of at most ``compaction_steps.STEP``
    revisions. ``physical`` (etcd: answer once the compacted history is
    gone from the backend database) also waits for this member's db to
    hold the drop (``ReplicationService.stored``: applied writes reach it
    within 20 ms otherwise). Any user may compact (auth enabled); the
    node's own auto-compaction proposes without a user."""
    done = _checked(
        node.authorize_user, lambda: compact_in_steps(node, pb.CompactionRequest(revision=request.revision))
    )
    if request.physical:
        done.addCallback(lambda answer: node.replication.stored().addCallback(lambda _: answer))
    return done


# ---- Cluster ----------------------------------------------------------------------


def _member(m: dict[str, Any], scheme: str = "http") -> pb.Member:
    """dkv's member as etcd's: the id derived from the name (``dkv.ids``),
    its RPC address as both peer and client URL (one port serves both;
    ``https`` when it serves TLS)."""
    url = f"{scheme}://{m['address']}"
    return pb.Member(ID=member_id(m["id"]), name=m["id"], peerURLs=[url], clientURLs=[url], isLearner=not m["voter"])


def _members(view: dict[str, Any], scheme: str = "http") -> list[pb.Member]:
    return [_member(m, scheme) for m in view["members"]]


def _header(node: Node, response: Any) -> Any:
    node.fill_header(response.header)
    response.header.revision = node.revision()
    return response


def _name_of(node: Node, ident: int) -> str:
    for m in node.members()["members"]:
        if member_id(m["id"]) == ident:
            return str(m["id"])
    raise errors.MemberNotFound()


def _address(url: str) -> str:
    """HOST:PORT of a peer URL (``http://127.0.0.1:7070``)."""
    host_port = url.split("://", 1)[-1].rstrip("/")
    try:
        host, port = parse_address(host_port, "peer URL")
    except ConfigError:
        raise errors.MemberBadURLs() from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def member_list(node: Node, request: pb.MemberListRequest) -> pb.MemberListResponse:
    return _header(node, pb.MemberListResponse(members=_members(node.members(), node.url_scheme)))


def member_add(node: Node, request: pb.MemberAddRequest) -> Deferred[pb.MemberAddResponse]:
    """etcd names a new member when it first starts; dkv needs the name now.
    It is derived from the peer URL: ``HOST-PORT`` (``127.0.0.1-10100``), the
    ``--node-id`` to start the new node with (and ``--join``)."""
    if len(request.peerURLs) != 1:
        return fail(errors.MemberBadURLs())
    try:
        node.authorize_root()
        address = _address(request.peerURLs[0])
    except EtcdError as e:
        return fail(e)
    name = address.replace("[", "").replace("]", "").replace(":", "-")

    def answer(view: dict[str, Any]) -> pb.MemberAddResponse:
        members = _members(view, node.url_scheme)
        added = next(m for m in members if m.name == name)
        return _header(node, pb.MemberAddResponse(member=added, members=members))

    return node.add_member(name, address, learner=request.isLearner).addCallback(answer)


def _membership_change(node: Node, ident: int, change: Callable[[str], Deferred[Any]], response: Any) -> Deferred[Any]:
    try:
        node.authorize_root()
        name = _name_of(node, ident)
    except EtcdError as e:
        return fail(e)
    return change(name).addCallback(lambda view: _header(node, response(members=_members(view, node.url_scheme))))


def member_remove(node: Node, request: pb.MemberRemoveRequest) -> Deferred[pb.MemberRemoveResponse]:
    return _membership_change(node, request.ID, node.remove_member, pb.MemberRemoveResponse)


def member_promote(node: Node, request: pb.MemberPromoteRequest) -> Deferred[pb.MemberPromoteResponse]:
    def promote(name: str) -> Deferred[Any]:
        member = next(m for m in node.members()["members"] if m["id"] == name)
        if member["voter"]:
            return fail(errors.MemberNotLearner())
        return node.promote_member(name).addErrback(_learner_not_ready)

    return _membership_change(node, request.ID, promote, pb.MemberPromoteResponse)


def _learner_not_ready(failure: Any) -> Any:
    if failure.check(dkv_errors.FailedPrecondition) and "caught up" in failure.getErrorMessage():
        raise errors.LearnerNotReady()
    return failure


def member_update(node: Node, request: pb.MemberUpdateRequest) -> Deferred[pb.MemberUpdateResponse]:
    """dkv does not move a member to another address in place: remove it and
    add it again (its data comes back by snapshot)."""
    try:
        node.authorize_root()
        _name_of(node, request.ID)
    except EtcdError as e:
        return fail(e)
    return fail(
        ApiError(Code.UNIMPLEMENTED, "dkv cannot change a member's URLs in place: remove the member and add it again")
    )


# ---- Maintenance ------------------------------------------------------------------


def status(node: Node, request: pb.StatusRequest) -> pb.StatusResponse:
    st = node.replication.status()
    size, in_use = node.store_size()
    me = next((m for m in st.membership.members if m.id == st.id), None)
    response = pb.StatusResponse(
        version=ETCD_API_VERSION,
        dbSize=size,
        dbSizeInUse=in_use,
        leader=member_id(st.leader) if st.leader else 0,
        raftIndex=st.commit,
        raftTerm=st.term,
        raftAppliedIndex=node.replication.applied,
        isLearner=me is not None and not me.voter,
    )
    return _header(node, response)


def hash_kv(node: Node, request: pb.HashKVRequest) -> Deferred[pb.HashKVResponse]:
    return _checked(node.authorize_root, lambda: node.hash_kv(request.revision))


def hash_all(node: Node, request: pb.HashRequest) -> pb.HashResponse:
    """etcd hashes its whole backend file; dkv answers the hash of the
    keyspace's history at the current revision (HashKV's), which is equal on
    members that applied the same entries."""
    node.authorize_root()
    kv = node.hash_kv(0)
    response = pb.HashResponse(hash=kv.hash)
    response.header.CopyFrom(kv.header)
    return response


def alarm(node: Node, request: pb.AlarmRequest) -> Deferred[pb.AlarmResponse]:
    """etcd's Alarm (``dkv.alarms``): GET lists the active alarms; ACTIVATE
    and DEACTIVATE go through the log (``etcdctl alarm disarm`` sends a
    DEACTIVATE for each listed alarm). Needs no user, as etcd's."""
    return node.alarm(request)


def defragment(node: Node, request: pb.DefragmentRequest) -> pb.DefragmentResponse:
    """An honest no-op: LMDB reuses the pages compaction frees, so the file
    stops growing, but it never shrinks in place (``dkvctl snapshot save``
    and a restore write a compact copy)."""
    node.authorize_root()
    return _header(node, pb.DefragmentResponse())


def move_leader(node: Node, request: pb.MoveLeaderRequest) -> Deferred[pb.MoveLeaderResponse]:
    try:
        node.authorize_root()
        name = _name_of(node, request.targetID)
    except EtcdError as e:
        return fail(e)
    member = next(m for m in node.members()["members"] if m["id"] == name)
    if not member["voter"]:
        return fail(errors.BadLeaderTransferee())
    return node.transfer_leader(name).addCallback(lambda _: _header(node, pb.MoveLeaderResponse()))


def snapshot_file(node: Node) -> Deferred[tuple[str, int]]:
    """A consistent copy of this node's db in a temporary file, followed by
    the SHA-256 of the copy (as etcd's snapshot ends with its hash: the
    format of ``dkv.storage.snapshot_file``), once the store holds every
    write answered before the call; fires with (path, size). The
    caller removes the file. Root only while auth is enabled."""
    try:
        node.authorize_root()
    except EtcdError as e:
        return fail(e)

    def copy() -> tuple[str, int]:
        fd, path = tempfile.mkstemp(prefix="dkv-snapshot-", suffix=".db")
        try:
            node.store_copy(fd)
            append_trailer(fd)
            size = os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path, size

    # The copy is of the store: it must hold every write answered so far.
    return node.replication.stored().addCallback(lambda _: deferToThread(copy))


# ---- Lease ------------------------------------------------------------------------


def _filled(node: Node) -> Callable[[Any], Any]:
    def fill(response: Any) -> Any:
        node.fill_header(response.header)
        return response

    return fill


def lease_grant(node: Node, request: pb.LeaseGrantRequest) -> Deferred[pb.LeaseGrantResponse]:
    def check() -> None:
        node.authorize_user()
        node.quota.check(LEASE_GRANT_COST)

    return _checked(check, lambda: node.leases.grant(request, node.idempotency)).addCallback(_filled(node))


def _authorize_revoke(node: Node, lease_id: int) -> None:
    """etcd: revoking a lease deletes its keys, so it needs WRITE on each."""
    if not node.auth.enabled:
        return
    with node.replication.view() as state:
        keys = list(LeaseReader(state.tables).keys(lease_id))
    node.authorize_user()
    node.authorize([(Access.WRITE, key, b"") for key in keys])


def lease_revoke(node: Node, request: pb.LeaseRevokeRequest) -> Deferred[pb.LeaseRevokeResponse]:
    return _checked(
        lambda: _authorize_revoke(node, request.ID), lambda: node.leases.revoke(request, node.idempotency)
    ).addCallback(_filled(node))


def lease_keep_alive(node: Node, request: pb.LeaseKeepAliveRequest) -> Deferred[pb.LeaseKeepAliveResponse]:
    """One keep-alive of the stream (the gateway's one-shot answer too)."""
    try:
        node.authorize_user()
    except EtcdError as e:
        return fail(e)
    return node.leases.keep_alive(request).addCallback(lambda response: _header(node, response))


def lease_time_to_live(node: Node, request: pb.LeaseTimeToLiveRequest) -> Deferred[pb.LeaseTimeToLiveResponse]:
    return _checked(node.authorize_user, lambda: node.leases.time_to_live(request)).addCallback(
        lambda response: _header(node, response)
    )


def lease_leases(node: Node, request: pb.LeaseLeasesRequest) -> pb.LeaseLeasesResponse:
    node.authorize_user()
    return _header(node, node.leases.leases())


# ---- Auth -------------------------------------------------------------------------


def auth_authenticate(node: Node, request: pb.AuthenticateRequest) -> Deferred[pb.AuthenticateResponse]:
    return node.auth.authenticate(request).addCallback(lambda response: _header(node, response))


def auth_write(node: Node, request: Any) -> Deferred[Any]:
    """AuthEnable, AuthDisable, User* and Role* writes, through the log."""
    return node.auth.write(node.token, request).addCallback(lambda response: _header(node, response))


def auth_read(node: Node, request: Any) -> Deferred[Any]:
    """AuthStatus, UserGet, UserList, RoleGet, RoleList."""
    return node.auth.read(node.token, request).addCallback(lambda response: _header(node, response))


# ---- the tables the two faces serve ------------------------------------------------------

#: service -> method -> (handler, request type).
SERVICES: dict[str, dict[str, tuple[Handler, Any]]] = {
    "KV": {
        "Range": (kv_range, pb.RangeRequest),
        "Put": (kv_put, pb.PutRequest),
        "DeleteRange": (kv_delete_range, pb.DeleteRangeRequest),
        "Txn": (kv_txn, pb.TxnRequest),
        "Compact": (kv_compact, pb.CompactionRequest),
    },
    "Cluster": {
        "MemberList": (member_list, pb.MemberListRequest),
        "MemberAdd": (member_add, pb.MemberAddRequest),
        "MemberRemove": (member_remove, pb.MemberRemoveRequest),
        "MemberUpdate": (member_update, pb.MemberUpdateRequest),
        "MemberPromote": (member_promote, pb.MemberPromoteRequest),
    },
    "Maintenance": {
        "Status": (status, pb.StatusRequest),
        "Hash": (hash_all, pb.HashRequest),
        "HashKV": (hash_kv, pb.HashKVRequest),
        "Alarm": (alarm, pb.AlarmRequest),
        "Defragment": (defragment, pb.DefragmentRequest),
        "MoveLeader": (move_leader, pb.MoveLeaderRequest),
    },
    # LeaseKeepAlive is a stream: dkv.api.etcd_grpc serves it with lease_keep_alive.
    "Lease": {
        "LeaseGrant": (lease_grant, pb.LeaseGrantRequest),
        "LeaseRevoke": (lease_revoke, pb.LeaseRevokeRequest),
        "LeaseTimeToLive": (lease_time_to_live, pb.LeaseTimeToLiveRequest),
        "LeaseLeases": (lease_leases, pb.LeaseLeasesRequest),
    },
    "Auth": {
        "AuthEnable": (auth_write, pb.AuthEnableRequest),
        "AuthDisable": (auth_write, pb.AuthDisableRequest),
        "AuthStatus": (auth_read, pb.AuthStatusRequest),
        "Authenticate": (auth_authenticate, pb.AuthenticateRequest),
        "UserAdd": (auth_write, pb.AuthUserAddRequest),
        "UserGet": (auth_read, pb.AuthUserGetRequest),
        "UserList": (auth_read, pb.AuthUserListRequest),
        "UserDelete": (auth_write, pb.AuthUserDeleteRequest),
        "UserChangePassword": (auth_write, pb.AuthUserChangePasswordRequest),
        "UserGrantRole": (auth_write, pb.AuthUserGrantRoleRequest),
        "UserRevokeRole": (auth_write, pb.AuthUserRevokeRoleRequest),
        "RoleAdd": (auth_write, pb.AuthRoleAddRequest),
        "RoleGet": (auth_read, pb.AuthRoleGetRequest),
        "RoleList": (auth_read, pb.AuthRoleListRequest),
        "RoleDelete": (auth_write, pb.AuthRoleDeleteRequest),
        "RoleGrantPermission": (auth_write, pb.AuthRoleGrantPermissionRequest),
        "RoleRevokePermission": (auth_write, pb.AuthRoleRevokePermissionRequest),
    },
}


def call(handler: Handler, node: Node, request: Any) -> Deferred[Any]:
    """handler's answer as a Deferred, whatever it returned or raised."""
    return maybeDeferred(handler, node, request)


__all__ = [
    "SERVICES",
    "ApiError",
    "answer_error",
    "call",
    "lease_keep_alive",
    "snapshot_file",
    "token_from_metadata",
]
