# test-case-name: tests.test_statemachine
"""The state machine commands carried in NORMAL log entries.

A command is a ``dkv.raft.v0.Command`` protobuf: the request id
``(origin, seq)`` and one of etcd's write requests (Put, DeleteRange, Txn,
Compaction), which ``dkv.statemachine`` applies to the multi-version store.
``origin`` is random per process start, ``seq`` counts requests within it,
so the node that took a request from a client recognises it when it applies
the entry, whoever proposed it.
"""

from __future__ import annotations

import attrs

from dkv.pb import raft_pb2
from dkv.pb.etcd_rpc_pb2 import (
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
_FIELDS = {
    PutRequest: "put",
    DeleteRangeRequest: "delete_range",
    TxnRequest: "txn",
    CompactionRequest: "compaction",
    LeaseGrantRequest: "lease_grant",
    LeaseRevokeRequest: "lease_revoke",
}


@attrs.frozen(slots=True)
class RequestId:
    origin: int
    seq: int


def encode(rid: RequestId, request: WriteRequest | LeaseRequest) -> bytes:
    """The command that carries request for rid, serialized."""
    cmd = raft_pb2.Command(origin=rid.origin, seq=rid.seq)
    getattr(cmd, _FIELDS[type(request)]).CopyFrom(request)
    return cmd.SerializeToString()


def encode_put(rid: RequestId, key: bytes, value: bytes) -> bytes:
    return encode(rid, PutRequest(key=key, value=value))


def encode_delete(rid: RequestId, key: bytes) -> bytes:
    return encode(rid, DeleteRangeRequest(key=key))


def decode(data: bytes) -> raft_pb2.Command:
    return raft_pb2.Command.FromString(data)
