# test-case-name: tests.mvcc.test_checks
"""etcd's checks on KV requests, before they reach the store.

etcd runs these in its API layer (``v3rpc/key.go``); ours calls them before
proposing, and the store calls them again when it applies (they depend on
the request alone, so every replica decides alike), without the txn size
limit, which is configuration (``--max-txn-ops``) and so stays at the API
layer.

Duplicate keys in a txn: a txn must not write a key twice on any path it can
take (a path picks ``success`` or ``failure`` at every txn, nested ones
included): two puts of one key, or a put inside a delete's range, are refused
with ``DuplicateKey``; two deletes may overlap. etcd 3.4/3.5 mean the same
rule but let two forms through by accident, which we refuse: a delete whose
range_end is ``"\\0"`` (every key >= key) is checked as that range, where etcd
checks it as an empty interval (etcd-io/etcd#22395); and a put in one nested
txn is checked against deletes of the nested txns after it, not only before
it (etcd-io/etcd#16380). Both forms would write one key twice in one
revision.
"""

from __future__ import annotations

from collections.abc import Iterable

from dkv.mvcc import errors
from dkv.mvcc.keys import Span, in_span, key_span
from dkv.pb.etcd_rpc_pb2 import DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest

#: etcd's default ``--max-txn-ops``.
DEFAULT_MAX_TXN_OPS = 128


def check_range(request: RangeRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()


def check_put(request: PutRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()
    if request.ignore_value and request.value:
        raise errors.ValueProvided()
    if request.ignore_lease and request.lease:
        raise errors.LeaseProvided()


def check_delete_range(request: DeleteRangeRequest) -> None:
    if not request.key:
        raise errors.EmptyKey()


def check_txn(request: TxnRequest, max_txn_ops: int | None = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's txn checks, in etcd's order: size (no list -- compares, success,
    failure -- longer than max_txn_ops; a nested txn gets what its parent left
    of the limit), compare keys, every operation, then duplicate keys
    (success, then failure). max_txn_ops None: no size limit."""
    _check_shape(request, max_txn_ops)
    _writes(request.success)
    _writes(request.failure)


def _check_shape(request: TxnRequest, max_txn_ops: int | None) -> None:
    size = max(len(request.compare), len(request.success), len(request.failure))
    if max_txn_ops is not None and size > max_txn_ops:
        raise errors.TooManyOps()
    for compare in request.compare:
        if not compare.key:
            raise errors.EmptyKey()
    left = None if max_txn_ops is None else max_txn_ops - size
    for op in (*request.success, *request.failure):
        _check_op(op, left)


def _check_op(op: RequestOp, max_txn_ops: int | None) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete_range(op.request_delete_range)
    elif kind == "request_txn":
        _check_shape(op.request_txn, max_txn_ops)
    else:
        raise errors.KeyNotFound()  # etcd's answer to an empty operation


def _writes(ops: Iterable[RequestOp]) -> tuple[set[bytes], list[Span]]:
    """The keys the operations may put and the spans they may delete, on any
    path; DuplicateKey if one path writes a key twice."""
    puts: set[bytes] = set()
    deletes: list[Span] = []
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            op_puts, op_deletes = {op.request_put.key}, []
        elif kind == "request_delete_range":
            request = op.request_delete_range
            op_puts, op_deletes = set(), [key_span(request.key, request.range_end)]
        elif kind == "request_txn":
            # success and failure exclude each other: each is checked alone,
            # and either may meet what comes before or after this txn
            then_puts, then_deletes = _writes(op.request_txn.success)
            else_puts, else_deletes = _writes(op.request_txn.failure)
            op_puts, op_deletes = then_puts | else_puts, then_deletes + else_deletes
        else:
            continue
        if (
            not op_puts.isdisjoint(puts)
            or any(in_span(key, span) for key in op_puts for span in deletes)
            or any(in_span(key, span) for key in puts for span in op_deletes)
        ):
            raise errors.DuplicateKey()
        puts |= op_puts
        deletes += op_deletes
    return puts, deletes
