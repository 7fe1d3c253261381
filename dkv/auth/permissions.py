# test-case-name: tests.auth.test_permissions
"""Which keys a request touches, and whether a user's roles cover them.

Pure functions over etcd's messages. A key range is etcd's ``(key,
range_end)``: an empty ``range_end`` is the one key, ``"\\0"`` every key from
``key`` on, anything else ``[key, range_end)``; a permission's range reads the
same way. A request is permitted when the union of the ranges the user's
roles grant for its kind (READ: READ or READWRITE; WRITE: WRITE or
READWRITE) contains its whole range, as etcd merges a user's permissions
before checking. A user with the ``root`` role may do anything.

A request range that is empty (``range_end`` not after ``key``) is checked
as the one key ``key``: never more permissive than that.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator

import attrs

from dkv.pb.etcd_auth_pb2 import Permission, Role
from dkv.pb.etcd_rpc_pb2 import DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest

ROOT = "root"


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


@attrs.frozen(order=True)
class Span:
    """``start <= k < end``; end None: no upper bound."""

    start: bytes
    end: bytes | None


def span(key: bytes, range_end: bytes = b"") -> Span:
    """The keys etcd's (key, range_end) names."""
    if not range_end:
        return Span(key, key + b"\x00")
    if range_end == b"\x00":
        return Span(key, None)
    if range_end <= key:
        return Span(key, key + b"\x00")
    return Span(key, range_end)


def merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    """The union of spans, as disjoint spans in key order (touching ones joined)."""
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start):
        if merged:
            last = merged[-1]
            if last.end is None or s.start <= last.end:
                end = None if last.end is None or s.end is None else max(last.end, s.end)
                merged[-1] = Span(last.start, end)
                continue
        merged.append(s)
    return tuple(merged)


def covered(granted: tuple[Span, ...], wanted: Span) -> bool:
    """Whether wanted lies within one of the merged spans granted."""
    for s in granted:
        if s.start > wanted.start:
            return False
        if s.end is None or (wanted.end is not None and wanted.end <= s.end):
            return True
    return False


_GRANTS = {
    Access.READ: (Permission.READ, Permission.READWRITE),
    Access.WRITE: (Permission.WRITE, Permission.READWRITE),
}


@attrs.frozen
class Grants:
    """What one user may do: everything (root) or the merged spans of its
    roles' permissions, per access."""

    root: bool
    read: tuple[Span, ...] = ()
    write: tuple[Span, ...] = ()

    @classmethod
    def of(cls, role_names: Iterable[str], roles: dict[str, Role]) -> Grants:
        names = list(role_names)
        if ROOT in names:
            return cls(root=True)
        perms = [p for name in names if name in roles for p in roles[name].keyPermission]
        spans = {
            access: merge(span(p.key, p.range_end) for p in perms if p.permType in types)
            for access, types in _GRANTS.items()
        }
        return cls(root=False, read=spans[Access.READ], write=spans[Access.WRITE])

    def allows(self, access: Access, key: bytes, range_end: bytes = b"") -> bool:
        if self.root:
            return True
        return covered(self.read if access is Access.READ else self.write, span(key, range_end))

    def allows_all(self, needs: Iterable[tuple[Access, bytes, bytes]]) -> bool:
        return all(self.allows(access, key, end) for access, key, end in needs)


Need = tuple[Access, bytes, bytes]


def range_needs(request: RangeRequest) -> Iterator[Need]:
    yield Access.READ, request.key, request.range_end


def put_needs(request: PutRequest) -> Iterator[Need]:
    """etcd: WRITE on the key; READ too if the previous version is returned."""
    yield Access.WRITE, request.key, b""
    if request.prev_kv:
        yield Access.READ, request.key, b""


def delete_needs(request: DeleteRangeRequest) -> Iterator[Need]:
    yield Access.WRITE, request.key, request.range_end
    if request.prev_kv:
        yield Access.READ, request.key, request.range_end


def txn_needs(request: TxnRequest) -> Iterator[Need]:
    """READ on every compare's range and every range read, WRITE (and READ
    with prev_kv) on every put and delete, in both branches and every
    nested txn: what the txn may touch, whichever path it takes (etcd's
    check, made before the compares are evaluated)."""
    for compare in request.compare:
        yield Access.READ, compare.key, compare.range_end
    for op in (*request.success, *request.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            yield from range_needs(op.request_range)
        elif kind == "request_put":
            yield from put_needs(op.request_put)
        elif kind == "request_delete_range":
            yield from delete_needs(op.request_delete_range)
        elif kind == "request_txn":
            yield from txn_needs(op.request_txn)
