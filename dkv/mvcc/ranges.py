# test-case-name: tests.mvcc.test_range
"""What a Range does with the keys it found: etcd's filters and sort rules,
on ``KeyState`` (no values needed, except to sort by VALUE)."""

from __future__ import annotations

from dkv.mvcc.records import KeyState
from dkv.pb.etcd_rpc_pb2 import RangeRequest

Found = list[tuple[bytes, KeyState]]

_STATE_FIELD: dict[int, str] = {
    RangeRequest.VERSION: "version",
    RangeRequest.CREATE: "create_revision",
    RangeRequest.MOD: "mod_revision",
}


def has_filters(request: RangeRequest) -> bool:
    return bool(
        request.min_mod_revision
        or request.max_mod_revision
        or request.min_create_revision
        or request.max_create_revision
    )


def filtered(found: Found, request: RangeRequest) -> Found:
    """The keys min/max_mod_revision and min/max_create_revision let
    through (0: no bound)."""
    if not has_filters(request):
        return found
    low_mod, high_mod = request.min_mod_revision, request.max_mod_revision
    low_create, high_create = request.min_create_revision, request.max_create_revision
    return [
        (key, state)
        for key, state in found
        if not (high_mod and state.mod_revision > high_mod)
        and not (low_mod and state.mod_revision < low_mod)
        and not (high_create and state.create_revision > high_create)
        and not (low_create and state.create_revision < low_create)
    ]


def keys_read(request: RangeRequest) -> int:
    """How many keys, in key order, etcd reads before it filters and sorts:
    limit + 1 (the one more tells ``more``) when the request's own order is
    NONE and it has no filters, else all of them (0). So a request with
    order NONE, a target other than KEY and a limit sorts only the first
    limit + 1 keys by that target, as etcd (every version) does."""
    if request.limit > 0 and request.sort_order == RangeRequest.NONE and not has_filters(request):
        return request.limit + 1
    return 0


def sort_order(request: RangeRequest) -> int:
    """etcd's effective order: a target other than KEY with order NONE sorts
    ASCEND; NONE stays key order."""
    if request.sort_order == RangeRequest.NONE and request.sort_target != RangeRequest.KEY:
        return RangeRequest.ASCEND
    return request.sort_order


def sorted_by_state(found: Found, target: int, descending: bool) -> Found:
    """Sorted by a target other than VALUE. The sort is stable and found is
    in key order, so equal targets stay in ascending key order, also when
    descending (etcd leaves the order of ties unspecified). An unknown target
    sorts by key."""
    field = _STATE_FIELD.get(target)
    if field is None:
        return found[::-1] if descending else found
    return sorted(found, key=lambda item: getattr(item[1], field), reverse=descending)
