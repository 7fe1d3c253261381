from dkv.pb import etcd_rpc_pb2 as _etcd_rpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL: _ClassVar[EntryKind]
    CONFIG: _ClassVar[EntryKind]
NORMAL: EntryKind
CONFIG: EntryKind

class SnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "membership")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    membership: ClusterConfig
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., membership: _Optional[_Union[ClusterConfig, _Mapping]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("cluster_id", "leader_term", "meta", "seq", "records", "crc", "last")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CRC_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    leader_term: int
    meta: SnapshotMeta
    seq: int
    records: _containers.RepeatedCompositeFieldContainer[Record]
    crc: int
    last: bool
    def __init__(self, cluster_id: _Optional[str] = ..., leader_term: _Optional[int] = ..., meta: _Optional[_Union[SnapshotMeta, _Mapping]] = ..., seq: _Optional[int] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., crc: _Optional[int] = ..., last: _Optional[bool] = ..., **kwargs) -> None: ...

class Record(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("next_seq", "done", "error")
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    next_seq: int
    done: bool
    error: str
    def __init__(self, next_seq: _Optional[int] = ..., done: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("cluster_id", "messages")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, cluster_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., **kwargs) -> None: ...

class StreamClosed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Entry(_message.Message):
    __slots__ = ("index", "term", "kind", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    kind: EntryKind
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "address", "voter")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    voter: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., voter: _Optional[bool] = ...) -> None: ...

class ClusterConfig(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class IssuedToken(_message.Message):
    __slots__ = ("name", "token", "password_hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    token: str
    password_hash: bytes
    def __init__(self, name: _Optional[str] = ..., token: _Optional[str] = ..., password_hash: _Optional[bytes] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("origin", "seq", "put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke", "auth_enable", "auth_disable", "user_add", "user_delete", "user_change_password", "user_grant_role", "user_revoke_role", "role_add", "role_delete", "role_grant_permission", "role_revoke_permission", "auth_token", "alarm", "idempotency_key", "idempotency_digest", "idempotency_window_ms", "leader_time_ms")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    COMPACTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLE_FIELD_NUMBER: _ClassVar[int]
    AUTH_DISABLE_FIELD_NUMBER: _ClassVar[int]
    USER_ADD_FIELD_NUMBER: _ClassVar[int]
    USER_DELETE_FIELD_NUMBER: _ClassVar[int]
    USER_CHANGE_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    USER_GRANT_ROLE_FIELD_NUMBER: _ClassVar[int]
    USER_REVOKE_ROLE_FIELD_NUMBER: _ClassVar[int]
    ROLE_ADD_FIELD_NUMBER: _ClassVar[int]
    ROLE_DELETE_FIELD_NUMBER: _ClassVar[int]
    ROLE_GRANT_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_REVOKE_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    LEADER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    origin: int
    seq: int
    put: _etcd_rpc_pb2.PutRequest
    delete_range: _etcd_rpc_pb2.DeleteRangeRequest
    txn: _etcd_rpc_pb2.TxnRequest
    compaction: _etcd_rpc_pb2.CompactionRequest
    lease_grant: _etcd_rpc_pb2.LeaseGrantRequest
    lease_revoke: _etcd_rpc_pb2.LeaseRevokeRequest
    auth_enable: _etcd_rpc_pb2.AuthEnableRequest
    auth_disable: _etcd_rpc_pb2.AuthDisableRequest
    user_add: _etcd_rpc_pb2.AuthUserAddRequest
    user_delete: _etcd_rpc_pb2.AuthUserDeleteRequest
    user_change_password: _etcd_rpc_pb2.AuthUserChangePasswordRequest
    user_grant_role: _etcd_rpc_pb2.AuthUserGrantRoleRequest
    user_revoke_role: _etcd_rpc_pb2.AuthUserRevokeRoleRequest
    role_add: _etcd_rpc_pb2.AuthRoleAddRequest
    role_delete: _etcd_rpc_pb2.AuthRoleDeleteRequest
    role_grant_permission: _etcd_rpc_pb2.AuthRoleGrantPermissionRequest
    role_revoke_permission: _etcd_rpc_pb2.AuthRoleRevokePermissionRequest
    auth_token: IssuedToken
    alarm: _etcd_rpc_pb2.AlarmRequest
    idempotency_key: bytes
    idempotency_digest: bytes
    idempotency_window_ms: int
    leader_time_ms: int
    def __init__(self, origin: _Optional[int] = ..., seq: _Optional[int] = ..., put: _Optional[_Union[_etcd_rpc_pb2.PutRequest, _Mapping]] = ..., delete_range: _Optional[_Union[_etcd_rpc_pb2.DeleteRangeRequest, _Mapping]] = ..., txn: _Optional[_Union[_etcd_rpc_pb2.TxnRequest, _Mapping]] = ..., compaction: _Optional[_Union[_etcd_rpc_pb2.CompactionRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_etcd_rpc_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_etcd_rpc_pb2.LeaseRevokeRequest, _Mapping]] = ..., auth_enable: _Optional[_Union[_etcd_rpc_pb2.AuthEnableRequest, _Mapping]] = ..., auth_disable: _Optional[_Union[_etcd_rpc_pb2.AuthDisableRequest, _Mapping]] = ..., user_add: _Optional[_Union[_etcd_rpc_pb2.AuthUserAddRequest, _Mapping]] = ..., user_delete: _Optional[_Union[_etcd_rpc_pb2.AuthUserDeleteRequest, _Mapping]] = ..., user_change_password: _Optional[_Union[_etcd_rpc_pb2.AuthUserChangePasswordRequest, _Mapping]] = ..., user_grant_role: _Optional[_Union[_etcd_rpc_pb2.AuthUserGrantRoleRequest, _Mapping]] = ..., user_revoke_role: _Optional[_Union[_etcd_rpc_pb2.AuthUserRevokeRoleRequest, _Mapping]] = ..., role_add: _Optional[_Union[_etcd_rpc_pb2.AuthRoleAddRequest, _Mapping]] = ..., role_delete: _Optional[_Union[_etcd_rpc_pb2.AuthRoleDeleteRequest, _Mapping]] = ..., role_grant_permission: _Optional[_Union[_etcd_rpc_pb2.AuthRoleGrantPermissionRequest, _Mapping]] = ..., role_revoke_permission: _Optional[_Union[_etcd_rpc_pb2.AuthRoleRevokePermissionRequest, _Mapping]] = ..., auth_token: _Optional[_Union[IssuedToken, _Mapping]] = ..., alarm: _Optional[_Union[_etcd_rpc_pb2.AlarmRequest, _Mapping]] = ..., idempotency_key: _Optional[bytes] = ..., idempotency_digest: _Optional[bytes] = ..., idempotency_window_ms: _Optional[int] = ..., leader_time_ms: _Optional[int] = ...) -> None: ...

class RequestVote(_message.Message):
    __slots__ = ("last_index", "last_term", "pre_vote", "transfer")
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    last_index: int
    last_term: int
    pre_vote: bool
    transfer: bool
    def __init__(self, last_index: _Optional[int] = ..., last_term: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., transfer: _Optional[bool] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("granted", "pre_vote")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    pre_vote: bool
    def __init__(self, granted: _Optional[bool] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class AppendEntries(_message.Message):
    __slots__ = ("prev_index", "prev_term", "entries", "commit", "seq", "commit_only")
    PREV_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ONLY_FIELD_NUMBER: _ClassVar[int]
    prev_index: int
    prev_term: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    seq: int
    commit_only: bool
    def __init__(self, prev_index: _Optional[int] = ..., prev_term: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., seq: _Optional[int] = ..., commit_only: _Optional[bool] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("success", "index", "hint_index", "hint_term", "seq")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    success: bool
    index: int
    hint_index: int
    hint_term: int
    seq: int
    def __init__(self, success: _Optional[bool] = ..., index: _Optional[int] = ..., hint_index: _Optional[int] = ..., hint_term: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("commit", "seq")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    commit: int
    seq: int
    def __init__(self, commit: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Propose(_message.Message):
    __slots__ = ("ctx", "payloads")
    CTX_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    ctx: int
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ctx: _Optional[int] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ProposeRejected(_message.Message):
    __slots__ = ("ctx",)
    CTX_FIELD_NUMBER: _ClassVar[int]
    ctx: int
    def __init__(self, ctx: _Optional[int] = ...) -> None: ...

class ReadIndexRequest(_message.Message):
    __slots__ = ("ctx",)
    CTX_FIELD_NUMBER: _ClassVar[int]
    ctx: int
    def __init__(self, ctx: _Optional[int] = ...) -> None: ...

class ReadIndexResponse(_message.Message):
    __slots__ = ("ctx", "index", "ok")
    CTX_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ctx: int
    index: int
    ok: bool
    def __init__(self, ctx: _Optional[int] = ..., index: _Optional[int] = ..., ok: _Optional[bool] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NotMember(_message.Message):
    __slots__ = ("config_index", "membership")
    CONFIG_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    config_index: int
    membership: ClusterConfig
    def __init__(self, config_index: _Optional[int] = ..., membership: _Optional[_Union[ClusterConfig, _Mapping]] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("to", "term", "request_vote", "vote_response", "append_entries", "append_response", "heartbeat", "heartbeat_response", "propose", "propose_rejected", "read_index_request", "read_index_response", "timeout_now", "not_member")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_VOTE_FIELD_NUMBER: _ClassVar[int]
    VOTE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPEND_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    APPEND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    PROPOSE_FIELD_NUMBER: _ClassVar[int]
    PROPOSE_REJECTED_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_REQUEST_FIELD_NUMBER: _ClassVar[int]
    READ_INDEX_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    NOT_MEMBER_FIELD_NUMBER: _ClassVar[int]
    to: str
    term: int
    request_vote: RequestVote
    vote_response: VoteResponse
    append_entries: AppendEntries
    append_response: AppendResponse
    heartbeat: Heartbeat
    heartbeat_response: HeartbeatResponse
    propose: Propose
    propose_rejected: ProposeRejected
    read_index_request: ReadIndexRequest
    read_index_response: ReadIndexResponse
    timeout_now: TimeoutNow
    not_member: NotMember
    def __init__(self, to: _Optional[str] = ..., term: _Optional[int] = ..., request_vote: _Optional[_Union[RequestVote, _Mapping]] = ..., vote_response: _Optional[_Union[VoteResponse, _Mapping]] = ..., append_entries: _Optional[_Union[AppendEntries, _Mapping]] = ..., append_response: _Optional[_Union[AppendResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., heartbeat_response: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., propose: _Optional[_Union[Propose, _Mapping]] = ..., propose_rejected: _Optional[_Union[ProposeRejected, _Mapping]] = ..., read_index_request: _Optional[_Union[ReadIndexRequest, _Mapping]] = ..., read_index_response: _Optional[_Union[ReadIndexResponse, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ..., not_member: _Optional[_Union[NotMember, _Mapping]] = ..., **kwargs) -> None: ...

class PeerHello(_message.Message):
    __slots__ = ("version", "cluster_id", "to", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    cluster_id: str
    to: str
    error: str
    def __init__(self, version: _Optional[int] = ..., cluster_id: _Optional[str] = ..., to: _Optional[str] = ..., error: _Optional[str] = ..., **kwargs) -> None: ...
