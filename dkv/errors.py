# test-case-name: tests.test_rest
"""Errors a client can see, with their HTTP status and gRPC code.

The API layers map these and nothing else: REST answers ``{"error": message,
"code": grpc_code}`` with ``http_status``; gRPC aborts with the code.
"""

from __future__ import annotations


class StartupError(Exception):
    """The node cannot start (a port in use, a db it cannot open, no
    cluster to join); the message is the one line the operator sees. Not a
    client error: ``dkv.cli`` prints it and exits non-zero."""


class DkvError(Exception):
    http_status = 500
    #: gRPC status code number (grpc.StatusCode.X.value[0]).
    grpc_code = 13  # INTERNAL
    default_message = "internal error"
    #: Whether the request was done: every error but OutcomeUnknown is an
    #: answer given before anything was applied (``NOT_APPLIED``). The gRPC
    #: layer sends it as ``OUTCOME_METADATA`` trailing metadata, so a
    #: follower that forwarded the request keeps the 503/504 distinction.
    outcome = "not-applied"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidArgument(DkvError):
    http_status = 400
    grpc_code = 3
    default_message = "invalid argument"


class KeyNotFound(DkvError):
    http_status = 404
    grpc_code = 5
    default_message = "key not found"


class MemberNotFound(DkvError):
    http_status = 404
    grpc_code = 5
    default_message = "no such member"


class RouteNotFound(DkvError):
    http_status = 404
    grpc_code = 5
    default_message = "not found"


class MethodNotAllowed(DkvError):
    http_status = 405
    grpc_code = 12  # UNIMPLEMENTED
    default_message = "method not allowed"


class TooLarge(DkvError):
    http_status = 413
    grpc_code = 8  # RESOURCE_EXHAUSTED
    default_message = "request too large"


class HeadersTooLarge(DkvError):
    """The request line and headers exceed the front door's bound (HTTP 431)."""

    http_status = 431
    grpc_code = 8  # RESOURCE_EXHAUSTED
    default_message = "request header fields too large"


class RequestTimeout(DkvError):
    """A request did not arrive in full within the read timeout (HTTP 408);
    nothing of it was done."""

    http_status = 408
    grpc_code = 4  # DEADLINE_EXCEEDED
    default_message = "request not received in time"


class FailedPrecondition(DkvError):
    http_status = 409
    grpc_code = 9
    default_message = "failed precondition"


class NoLeader(DkvError):
    """Certainly not applied: safe to retry (HTTP 503, UNAVAILABLE)."""

    http_status = 503
    grpc_code = 14
    default_message = "no leader"


class OutcomeUnknown(DkvError):
    """Proposed (or forwarded) but its fate is unknown (HTTP 504, DEADLINE_EXCEEDED)."""

    http_status = 504
    grpc_code = 4
    default_message = "outcome unknown"
    outcome = "unknown"


class NoSpace(DkvError):
    """The NOSPACE alarm is active (the db passed its space quota): a write
    that grows the db is refused, certainly not applied (HTTP 507
    Insufficient Storage, RESOURCE_EXHAUSTED as etcd)."""

    http_status = 507
    grpc_code = 8  # RESOURCE_EXHAUSTED
    default_message = "etcdserver: mvcc: database space exceeded"


class Overloaded(DkvError):
    """Admission control refused new work: too many requests are waiting on
    this node (``dkv.replication.admission``). Certainly not applied, safe to
    retry after ``retry_after`` seconds (HTTP 429 with ``Retry-After``,
    RESOURCE_EXHAUSTED; etcd's API says ``etcdserver: too many requests``).
    ``reason`` names the bound that was passed (the metric's label)."""

    http_status = 429
    grpc_code = 8  # RESOURCE_EXHAUSTED
    default_message = "too many requests"
    retry_after = 1

    def __init__(self, message: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class Unauthenticated(DkvError):
    """Auth is enabled and the request has no valid token."""

    http_status = 401
    grpc_code = 16  # UNAUTHENTICATED
    default_message = "authentication required"


class PermissionDenied(DkvError):
    """The request's user may not do this."""

    http_status = 403
    grpc_code = 7  # PERMISSION_DENIED
    default_message = "permission denied"


#: The trailing metadata key that carries ``DkvError.outcome`` on a failed gRPC call.
OUTCOME_METADATA = "dkv-outcome"
NOT_APPLIED = "not-applied"
UNKNOWN = "unknown"


#: The trailing metadata key that names the ``DkvError`` class of a failed
#: gRPC call (``Overloaded``, ``NoSpace``...): several classes share a code
#: (RESOURCE_EXHAUSTED is 413, 429 and 507), so a follower that forwarded
#: the call maps the leader's answer back by this name (``BY_NAME``), and by
#: the code (``BY_GRPC_CODE``) only when it is absent or unknown.
ERROR_METADATA = "dkv-error"
#: The trailing metadata key that carries ``Overloaded.reason``.
REASON_METADATA = "dkv-reason"

#: The errors a leader's answer to a forwarded call is named as, by class
#: name. Answers about the HTTP exchange itself (RequestTimeout,
#: HeadersTooLarge, MethodNotAllowed, RouteNotFound) are not among them: they
#: concern the leader's own caller, and map by code.
BY_NAME: dict[str, type[DkvError]] = {
    cls.__name__: cls
    for cls in (
        InvalidArgument,
        KeyNotFound,
        MemberNotFound,
        TooLarge,
        FailedPrecondition,
        NoLeader,
        OutcomeUnknown,
        NoSpace,
        Overloaded,
        Unauthenticated,
        PermissionDenied,
    )
}


def error_metadata(error: DkvError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata a failed gRPC call carries for error: its
    outcome, its class name, and an Overloaded refusal's reason."""
    pairs = [(OUTCOME_METADATA, error.outcome), (ERROR_METADATA, type(error).__name__)]
    if isinstance(error, Overloaded):
        pairs.append((REASON_METADATA, error.reason))
    return tuple(pairs)


#: gRPC code number -> the error class a forwarded call's failure becomes
#: when its answer does not name one (``ERROR_METADATA``).
BY_GRPC_CODE: dict[int, type[DkvError]] = {
    3: InvalidArgument,
    4: OutcomeUnknown,
    5: MemberNotFound,
    8: TooLarge,
    7: PermissionDenied,
    9: FailedPrecondition,
    14: NoLeader,
    16: Unauthenticated,
}
