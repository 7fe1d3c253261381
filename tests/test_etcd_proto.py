"""Our etcd schema (proto/etcd_*.proto) says what etcd's does.

The facts below were read from etcd's own ``api/etcdserverpb/rpc.proto``,
``api/mvccpb/kv.proto`` and ``api/authpb/auth.proto`` (etcd 3.5): gRPC method
paths, field numbers and enum values. A typo in our .proto files would make
etcd's clients send or read the wrong field without any error, so each fact is
checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dkv.pb import etcd_auth_pb2, etcd_kv_pb2, etcd_rpc_pb2

GRPC_MODULE = Path(etcd_rpc_pb2.__file__).with_name("etcd_rpc_pb2_grpc.py")

#: Every RPC of etcd 3.5, by service.
ETCD_METHODS = {
    "KV": ["Range", "Put", "DeleteRange", "Txn", "Compact"],
    "Watch": ["Watch"],
    "Lease": ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases"],
    "Cluster": ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote"],
    "Maintenance": [
        "Alarm", "Status", "Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade",
    ],
    "Auth": [
        "AuthEnable", "AuthDisable", "AuthStatus", "Authenticate",
        "UserAdd", "UserGet", "UserList", "UserDelete", "UserChangePassword",
        "UserGrantRole", "UserRevokeRole",
        "RoleAdd", "RoleGet", "RoleList", "RoleDelete", "RoleGrantPermission", "RoleRevokePermission",
    ],
}  # fmt: skip

#: (message, field, number), as etcd numbers them.
FIELD_NUMBERS = [
    (etcd_rpc_pb2.ResponseHeader, "cluster_id", 1),
    (etcd_rpc_pb2.ResponseHeader, "member_id", 2),
    (etcd_rpc_pb2.ResponseHeader, "revision", 3),
    (etcd_rpc_pb2.ResponseHeader, "raft_term", 4),
    (etcd_rpc_pb2.RangeRequest, "key", 1),
    (etcd_rpc_pb2.RangeRequest, "range_end", 2),
    (etcd_rpc_pb2.RangeRequest, "limit", 3),
    (etcd_rpc_pb2.RangeRequest, "revision", 4),
    (etcd_rpc_pb2.RangeRequest, "sort_order", 5),
    (etcd_rpc_pb2.RangeRequest, "sort_target", 6),
    (etcd_rpc_pb2.RangeRequest, "serializable", 7),
    (etcd_rpc_pb2.RangeRequest, "keys_only", 8),
    (etcd_rpc_pb2.RangeRequest, "count_only", 9),
    (etcd_rpc_pb2.RangeRequest, "min_mod_revision", 10),
    (etcd_rpc_pb2.RangeRequest, "max_mod_revision", 11),
    (etcd_rpc_pb2.RangeRequest, "min_create_revision", 12),
    (etcd_rpc_pb2.RangeRequest, "max_create_revision", 13),
    (etcd_rpc_pb2.RangeResponse, "kvs", 2),
    (etcd_rpc_pb2.RangeResponse, "more", 3),
    (etcd_rpc_pb2.RangeResponse, "count", 4),
    (etcd_rpc_pb2.PutRequest, "lease", 3),
    (etcd_rpc_pb2.PutRequest, "prev_kv", 4),
    (etcd_rpc_pb2.PutRequest, "ignore_value", 5),
    (etcd_rpc_pb2.PutRequest, "ignore_lease", 6),
    (etcd_rpc_pb2.PutResponse, "prev_kv", 2),
    (etcd_rpc_pb2.DeleteRangeRequest, "prev_kv", 3),
    (etcd_rpc_pb2.DeleteRangeResponse, "deleted", 2),
    (etcd_rpc_pb2.DeleteRangeResponse, "prev_kvs", 3),
    (etcd_rpc_pb2.RequestOp, "request_range", 1),
    (etcd_rpc_pb2.RequestOp, "request_txn", 4),
    (etcd_rpc_pb2.ResponseOp, "response_delete_range", 3),
    (etcd_rpc_pb2.Compare, "result", 1),
    (etcd_rpc_pb2.Compare, "target", 2),
    (etcd_rpc_pb2.Compare, "key", 3),
    (etcd_rpc_pb2.Compare, "version", 4),
    (etcd_rpc_pb2.Compare, "create_revision", 5),
    (etcd_rpc_pb2.Compare, "mod_revision", 6),
    (etcd_rpc_pb2.Compare, "value", 7),
    (etcd_rpc_pb2.Compare, "lease", 8),
    (etcd_rpc_pb2.Compare, "range_end", 64),
    (etcd_rpc_pb2.TxnRequest, "compare", 1),
    (etcd_rpc_pb2.TxnRequest, "success", 2),
    (etcd_rpc_pb2.TxnRequest, "failure", 3),
    (etcd_rpc_pb2.TxnResponse, "succeeded", 2),
    (etcd_rpc_pb2.TxnResponse, "responses", 3),
    (etcd_rpc_pb2.CompactionRequest, "physical", 2),
    (etcd_rpc_pb2.HashKVResponse, "hash", 2),
    (etcd_rpc_pb2.HashKVResponse, "compact_revision", 3),
    (etcd_rpc_pb2.SnapshotResponse, "remaining_bytes", 2),
    (etcd_rpc_pb2.SnapshotResponse, "blob", 3),
    (etcd_rpc_pb2.WatchRequest, "progress_request", 3),
    (etcd_rpc_pb2.WatchCreateRequest, "start_revision", 3),
    (etcd_rpc_pb2.WatchCreateRequest, "filters", 5),
    (etcd_rpc_pb2.WatchCreateRequest, "prev_kv", 6),
    (etcd_rpc_pb2.WatchCreateRequest, "watch_id", 7),
    (etcd_rpc_pb2.WatchCreateRequest, "fragment", 8),
    (etcd_rpc_pb2.WatchResponse, "compact_revision", 5),
    (etcd_rpc_pb2.WatchResponse, "cancel_reason", 6),
    (etcd_rpc_pb2.WatchResponse, "fragment", 7),
    (etcd_rpc_pb2.WatchResponse, "events", 11),
    (etcd_rpc_pb2.LeaseGrantRequest, "TTL", 1),
    (etcd_rpc_pb2.LeaseGrantRequest, "ID", 2),
    (etcd_rpc_pb2.LeaseGrantResponse, "error", 4),
    (etcd_rpc_pb2.LeaseCheckpoint, "remaining_TTL", 2),
    (etcd_rpc_pb2.LeaseTimeToLiveResponse, "grantedTTL", 4),
    (etcd_rpc_pb2.LeaseTimeToLiveResponse, "keys", 5),
    (etcd_rpc_pb2.Member, "ID", 1),
    (etcd_rpc_pb2.Member, "peerURLs", 3),
    (etcd_rpc_pb2.Member, "clientURLs", 4),
    (etcd_rpc_pb2.Member, "isLearner", 5),
    (etcd_rpc_pb2.MemberAddResponse, "members", 3),
    (etcd_rpc_pb2.MemberListRequest, "linearizable", 1),
    (etcd_rpc_pb2.MoveLeaderRequest, "targetID", 1),
    (etcd_rpc_pb2.AlarmRequest, "memberID", 2),
    (etcd_rpc_pb2.AlarmRequest, "alarm", 3),
    (etcd_rpc_pb2.StatusResponse, "dbSize", 3),
    (etcd_rpc_pb2.StatusResponse, "leader", 4),
    (etcd_rpc_pb2.StatusResponse, "raftAppliedIndex", 7),
    (etcd_rpc_pb2.StatusResponse, "errors", 8),
    (etcd_rpc_pb2.StatusResponse, "dbSizeInUse", 9),
    (etcd_rpc_pb2.StatusResponse, "isLearner", 10),
    (etcd_rpc_pb2.AuthUserAddRequest, "options", 3),
    (etcd_rpc_pb2.AuthUserAddRequest, "hashedPassword", 4),
    (etcd_rpc_pb2.AuthUserChangePasswordRequest, "hashedPassword", 3),
    (etcd_rpc_pb2.AuthStatusResponse, "authRevision", 3),
    (etcd_rpc_pb2.AuthRoleRevokePermissionRequest, "range_end", 3),
    (etcd_kv_pb2.KeyValue, "key", 1),
    (etcd_kv_pb2.KeyValue, "create_revision", 2),
    (etcd_kv_pb2.KeyValue, "mod_revision", 3),
    (etcd_kv_pb2.KeyValue, "version", 4),
    (etcd_kv_pb2.KeyValue, "value", 5),
    (etcd_kv_pb2.KeyValue, "lease", 6),
    (etcd_kv_pb2.Event, "type", 1),
    (etcd_kv_pb2.Event, "kv", 2),
    (etcd_kv_pb2.Event, "prev_kv", 3),
    (etcd_auth_pb2.User, "options", 4),
    (etcd_auth_pb2.Permission, "permType", 1),
    (etcd_auth_pb2.Permission, "range_end", 3),
    (etcd_auth_pb2.Role, "keyPermission", 2),
    (etcd_auth_pb2.UserAddOptions, "no_password", 1),
]

#: (enum, {name: number}), as etcd numbers them.
ENUMS = [
    (etcd_rpc_pb2.RangeRequest.SortOrder, {"NONE": 0, "ASCEND": 1, "DESCEND": 2}),
    (etcd_rpc_pb2.RangeRequest.SortTarget, {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4}),
    (etcd_rpc_pb2.Compare.CompareResult, {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3}),
    (etcd_rpc_pb2.Compare.CompareTarget, {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4}),
    (etcd_rpc_pb2.WatchCreateRequest.FilterType, {"NOPUT": 0, "NODELETE": 1}),
    (etcd_rpc_pb2.AlarmType, {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}),
    (etcd_rpc_pb2.AlarmRequest.AlarmAction, {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2}),
    (etcd_rpc_pb2.DowngradeRequest.DowngradeAction, {"VALIDATE": 0, "ENABLE": 1, "CANCEL": 2}),
    (etcd_kv_pb2.Event.EventType, {"PUT": 0, "DELETE": 1}),
    (etcd_auth_pb2.Permission.Type, {"READ": 0, "WRITE": 1, "READWRITE": 2}),
]


def test_packages_are_etcds() -> None:
    assert etcd_rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert etcd_kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert etcd_auth_pb2.DESCRIPTOR.package == "authpb"


def test_grpc_method_paths_are_exactly_etcds() -> None:
    """The generated stubs and servicers name exactly etcd's paths, e.g.
    ``/etcdserverpb.KV/Range``: nothing missing, nothing extra."""
    expected = {f"/etcdserverpb.{service}/{method}" for service, methods in ETCD_METHODS.items() for method in methods}
    found = set(re.findall(r"'(/[\w.]+/\w+)'", GRPC_MODULE.read_text()))
    assert found == expected


def test_services_in_the_descriptor() -> None:
    services = etcd_rpc_pb2.DESCRIPTOR.services_by_name
    assert {name: [m.name for m in services[name].methods] for name in services} == ETCD_METHODS


@pytest.mark.parametrize(
    ("service", "method", "client_streams", "server_streams"),
    [
        ("Watch", "Watch", True, True),
        ("Lease", "LeaseKeepAlive", True, True),
        ("Maintenance", "Snapshot", False, True),
        ("KV", "Range", False, False),
    ],
)
def test_streaming_kinds(service: str, method: str, client_streams: bool, server_streams: bool) -> None:
    found = etcd_rpc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    assert (found.client_streaming, found.server_streaming) == (client_streams, server_streams)


@pytest.mark.parametrize(("message", "field", "number"), FIELD_NUMBERS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_field_numbers(message, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number


@pytest.mark.parametrize(("enum", "values"), ENUMS, ids=lambda x: getattr(x, "DESCRIPTOR", None) and x.DESCRIPTOR.name)
def test_enum_values(enum, values: dict[str, int]) -> None:
    assert {v.name: v.number for v in enum.DESCRIPTOR.values} == values


def test_target_union_is_a_oneof() -> None:
    """Compare's targets share one oneof (``target_union``), as etcd's."""
    oneof = etcd_rpc_pb2.Compare.DESCRIPTOR.oneofs_by_name["target_union"]
    assert [f.name for f in oneof.fields] == ["version", "create_revision", "mod_revision", "value", "lease"]


def test_messages_reference_etcds_packages() -> None:
    kvs = etcd_rpc_pb2.RangeResponse.DESCRIPTOR.fields_by_name["kvs"]
    assert kvs.message_type.full_name == "mvccpb.KeyValue"
    perm = etcd_rpc_pb2.AuthRoleGrantPermissionRequest.DESCRIPTOR.fields_by_name["perm"]
    assert perm.message_type.full_name == "authpb.Permission"
