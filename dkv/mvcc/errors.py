# test-case-name: tests.mvcc.test_errors
"""etcd's v3 API errors: the one table the API layers map.

Each class carries the exact message etcd's server sends (its
``rpctypes`` errors, "etcdserver: ..." included) and the gRPC status code it
sends it with, as a number (``Code``), so this package needs no gRPC import.
The gRPC layer aborts with ``grpc.StatusCode`` of that number and the message;
the JSON gateway answers ``{"error", "message", "code"}`` with the HTTP status
grpc-gateway derives from the code (``dkv.api.etcd_json``).

The state machine raises only what depends on the request and the replicated
state (the ``KV`` and lease groups below); the API layer raises the others.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Code(enum.IntEnum):
    """gRPC status codes (google.rpc.Code), by number."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class EtcdError(Exception):
    """An error etcd's API answers with: ``code`` and ``message`` are what the
    client receives. Subclasses fix both; instances take no arguments."""

    code: ClassVar[Code] = Code.UNKNOWN
    message: ClassVar[str] = "etcdserver: unknown error"

    def __init__(self) -> None:
        super().__init__(self.message)


# ---- KV requests and the multi-version store ----


class EmptyKey(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: key is not provided"


class KeyNotFound(EtcdError):
    """ignore_value / ignore_lease on a key that does not exist, or an empty
    operation in a txn."""

    code = Code.INVALID_ARGUMENT
    message = "etcdserver: key not found"


class ValueProvided(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: value is provided"


class LeaseProvided(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: lease is provided"


class TooManyOps(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: too many operations in txn request"


class DuplicateKey(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: duplicate key given in txn request"


class Compacted(EtcdError):
    code = Code.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevision(EtcdError):
    code = Code.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"


class NoSpace(EtcdError):
    code = Code.RESOURCE_EXHAUSTED
    message = "etcdserver: mvcc: database space exceeded"


# ---- Leases ----


class TTLZero(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: ttl is 0"


class LeaseNotFound(EtcdError):
    code = Code.NOT_FOUND
    message = "etcdserver: requested lease not found"


class LeaseExists(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: lease already exists"


class LeaseTTLTooLarge(EtcdError):
    code = Code.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


# ---- Membership ----


class MemberExists(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: member ID already exist"


class PeerURLExists(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: Peer URLs already exists"


class MemberNotEnoughStarted(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: re-configuration failed due to not enough started members"


class MemberBadURLs(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: given member URLs are invalid"


class MemberNotFound(EtcdError):
    code = Code.NOT_FOUND
    message = "etcdserver: member not found"


class MemberNotLearner(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: can only promote a learner member"


class LearnerNotReady(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: can only promote a learner member which is in sync with leader"


class TooManyLearners(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: too many learner members in cluster"


# ---- Requests and the server ----


class RequestTooLarge(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: request is too large"


class TooManyRequests(EtcdError):
    code = Code.RESOURCE_EXHAUSTED
    message = "etcdserver: too many requests"


class NoLeader(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: no leader"


class NotLeader(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: not leader"


class LeaderChanged(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: leader changed"


class NotCapable(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: not capable"


class Stopped(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: server stopped"


class Timeout(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: request timed out"


class TimeoutDueToLeaderFail(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: request timed out, possibly due to previous leader failure"


class TimeoutDueToConnectionLost(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: request timed out, possibly due to connection lost"


class Unhealthy(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: unhealthy cluster"


class Corrupt(EtcdError):
    code = Code.DATA_LOSS
    message = "etcdserver: corrupt cluster"


class NotSupportedForLearner(EtcdError):
    code = Code.UNAVAILABLE
    message = "etcdserver: rpc not supported for learner"


class BadLeaderTransferee(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: bad leader transferee"


# ---- Auth ----


class RootUserNotExist(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: root user does not exist"


class RootRoleNotExist(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: root user does not have root role"


class UserAlreadyExist(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: user name already exists"


class UserEmpty(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: user name is empty"


class UserNotFound(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: user name not found"


class RoleAlreadyExist(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: role name already exists"


class RoleNotFound(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: role name not found"


class RoleEmpty(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: role name is empty"


class AuthFailed(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: authentication failed, invalid user ID or password"


class PermissionDenied(EtcdError):
    code = Code.PERMISSION_DENIED
    message = "etcdserver: permission denied"


class RoleNotGranted(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: role is not granted to the user"


class PermissionNotGranted(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: permission is not granted to the role"


class AuthNotEnabled(EtcdError):
    code = Code.FAILED_PRECONDITION
    message = "etcdserver: authentication is not enabled"


class InvalidAuthToken(EtcdError):
    code = Code.UNAUTHENTICATED
    message = "etcdserver: invalid auth token"


class InvalidAuthMgmt(EtcdError):
    code = Code.INVALID_ARGUMENT
    message = "etcdserver: invalid auth management"
