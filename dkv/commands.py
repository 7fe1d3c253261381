# test-case-name: tests.test_statemachine
"""The state machine commands carried in NORMAL log entries.

A command is a ``dkv.raft.v0.Command`` protobuf: the request id
``(origin, seq)`` and one of etcd's write requests (Put, DeleteRange, Txn,
Compaction), a lease write, an alarm (``dkv.alarms``), or an Auth write (``dkv.auth.store``), which
``dkv.statemachine`` applies to the multi-version store or the auth tables.
``origin`` is random per process start, ``seq`` counts requests within it,
so the node that took a request from a client recognises it when it applies
the entry, whoever proposed it.

A command may also carry an idempotency key (``Idempotency``: the key, the
digest of the request as the client asked it, and the window), and the
leader's clock, which its driver appends with ``stamp`` (see
``dkv.idempotency``).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import attrs

from dkv.pb import raft_pb2
from dkv.pb.etcd_rpc_pb2 import (
    AlarmRequest,
    AuthDisableRequest,
    AuthEnableRequest,
    AuthRoleAddRequest,
    AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest,
    AuthUserAddRequest,
    AuthUserChangePasswordRequest,
    AuthUserDeleteRequest,
    AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
    CompactionRequest,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    TxnRequest,
)

#: The write requests a command can carry, by the Command field that holds them.
WriteRequest = PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest
#: The lease writes (``dkv.mvcc.lease_ops``).
LeaseRequest = LeaseGrantRequest | LeaseRevokeRequest
#: The Auth writes (``dkv.auth.store``).
AuthRequest = (
    AuthEnableRequest
    | AuthDisableRequest
    | AuthUserAddRequest
    | AuthUserDeleteRequest
    | AuthUserChangePasswordRequest
    | AuthUserGrantRoleRequest
    | AuthUserRevokeRoleRequest
    | AuthRoleAddRequest
    | AuthRoleDeleteRequest
    | AuthRoleGrantPermissionRequest
    | AuthRoleRevokePermissionRequest
    | raft_pb2.IssuedToken
)
#: etcd's alarms (``dkv.alarms``): ACTIVATE / DEACTIVATE through the log.
Request = WriteRequest | LeaseRequest | AuthRequest | AlarmRequest
_FIELDS = {
    PutRequest: "put",
    DeleteRangeRequest: "delete_range",
    TxnRequest: "txn",
    CompactionRequest: "compaction",
    LeaseGrantRequest: "lease_grant",
    LeaseRevokeRequest: "lease_revoke",
    AuthEnableRequest: "auth_enable",
    AuthDisableRequest: "auth_disable",
    AuthUserAddRequest: "user_add",
    AuthUserDeleteRequest: "user_delete",
    AuthUserChangePasswordRequest: "user_change_password",
    AuthUserGrantRoleRequest: "user_grant_role",
    AuthUserRevokeRoleRequest: "user_revoke_role",
    AuthRoleAddRequest: "role_add",
    AuthRoleDeleteRequest: "role_delete",
    AuthRoleGrantPermissionRequest: "role_grant_permission",
    AuthRoleRevokePermissionRequest: "role_revoke_permission",
    raft_pb2.IssuedToken: "auth_token",
    AlarmRequest: "alarm",
}


class RequestId(NamedTuple):
    """Names a client's write: the proposing process (random per process)
    and its sequence number. A tuple: hashed and compared in C (it keys the
    pending writes)."""

    origin: int
    seq: int


@attrs.frozen(slots=True)
class Idempotency:
    """A client's idempotency key and how long (seconds of log time) the
    outcome of its write is remembered."""

    key: bytes
    window: float


def digest(field: str, request: object) -> bytes:
    """The digest of a request as the client asked it: the Command field
    that carries it and its deterministic serialization. Two requests with
    the same digest are the same request."""
    data = request.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
    return hashlib.sha256(field.encode() + b"\x00" + data).digest()[:16]


def encode(
    rid: RequestId,
    request: Request,
    idempotency: Idempotency | None = None,
    *,
    as_asked: Request | None = None,
) -> bytes:
    """The command that carries request for rid, serialized. With an
    idempotency key, the digest is of ``as_asked`` (the request as the client
    sent it, when the node filled something in, as a lease grant's id) or
    else of request."""
    cmd = raft_pb2.Command(origin=rid.origin, seq=rid.seq)
    field = _FIELDS[type(request)]
    getattr(cmd, field).CopyFrom(request)
    if idempotency is not None:
        set_idempotency(cmd, field, request if as_asked is None else as_asked, idempotency)
    return cmd.SerializeToString()


def set_idempotency(cmd: raft_pb2.Command, field: str, request: object, idempotency: Idempotency) -> None:
    """Make cmd carry the key, the digest of request (held in cmd's field)
    and the window (any command kind: lease writes too)."""
    cmd.idempotency_key = idempotency.key
    cmd.idempotency_digest = digest(field, request)
    cmd.idempotency_window_ms = round(idempotency.window * 1000)


def encode_put(rid: RequestId, key: bytes, value: bytes, idempotency: Idempotency | None = None) -> bytes:
    """``encode`` of a PutRequest of key and value (the hot write of
    ``/v0``), built in place in the command: no request to copy in."""
    cmd = raft_pb2.Command(origin=rid.origin, seq=rid.seq)
    put = cmd.put
    put.SetInParent()  # a put of an empty key and value is still a put
    put.key = key
    put.value = value
    if idempotency is not None:
        set_idempotency(cmd, "put", put, idempotency)
    return cmd.SerializeToString()


def encode_delete(rid: RequestId, key: bytes, idempotency: Idempotency | None = None) -> bytes:
    return encode(rid, DeleteRangeRequest(key=key), idempotency)


#: The tag of ``Command.leader_time_ms`` (field 19, varint), as encoded.
_STAMP_TAG = bytes(((19 << 3) | 0, 1))


def stamp(payload: bytes, now_ms: int) -> bytes:
    """payload (an encoded command) carrying the leader's clock now_ms.
    Appending a field to an encoded message sets it (the last one read
    wins), so this costs no parse; an empty payload (a no-op) stays empty."""
    if not payload:
        return payload
    out = bytearray(payload)
    out += _STAMP_TAG
    value = max(0, now_ms)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode(data: bytes) -> raft_pb2.Command:
    return raft_pb2.Command.FromString(data)
