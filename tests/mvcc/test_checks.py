"""etcd's checks on KV requests (v3rpc/key.go), and where ours differ."""

from __future__ import annotations

import pytest

from dkv.mvcc import MvccStore, check_txn, errors
from dkv.pb.etcd_rpc_pb2 import Compare, RequestOp
from dkv.storage.tables import MemoryTables
from tests.mvcc.helpers import compare, op_delete, op_put, op_range, op_txn, txn


def test_too_many_operations() -> None:
    """etcd's checkTxnRequest: the longest of compare, success and failure
    may have max_txn_ops entries ("Txn.Success can have at most 128
    operations, and Txn.Failure can have at most 128 operations").
    "etcdserver: too many operations in txn request", InvalidArgument."""
    check_txn(txn(success=[op_put(b"k%d" % i) for i in range(128)], failure=[op_put(b"j%d" % i) for i in range(128)]))
    with pytest.raises(errors.TooManyOps) as raised:
        check_txn(txn(compare=[compare(b"k", "VERSION", "EQUAL", 0)] * 129))
    assert str(raised.value) == "etcdserver: too many operations in txn request"
    with pytest.raises(errors.TooManyOps):
        check_txn(txn(success=[op_put(b"k%d" % i) for i in range(4)]), max_txn_ops=3)


def test_a_nested_txn_gets_what_its_parent_leaves() -> None:
    """etcd checks a nested txn against maxTxnOps minus its parent's size."""
    nested = op_txn(success=[op_put(b"n%d" % i) for i in range(3)])
    check_txn(txn(success=[op_put(b"a"), nested]), max_txn_ops=5)
    with pytest.raises(errors.TooManyOps):
        check_txn(txn(success=[op_put(b"a"), op_put(b"b"), op_put(b"c"), nested]), max_txn_ops=5)


def test_the_store_has_no_size_limit() -> None:
    """The limit is configuration (--max-txn-ops), checked before proposing;
    the store applies what was proposed."""
    store = MvccStore(MemoryTables())
    store.txn(txn(success=[op_put(b"k%d" % i) for i in range(300)]))
    assert store.revision == 2


def test_empty_keys_and_operations() -> None:
    """A compare or an operation without a key is "etcdserver: key is not
    provided"; an operation with no request at all is etcd's
    ErrGRPCKeyNotFound ("etcdserver: key not found")."""
    with pytest.raises(errors.EmptyKey):
        check_txn(txn(compare=[Compare(target=Compare.VERSION)]))
    for op in (op_range(b""), op_put(b""), op_delete(b"")):
        with pytest.raises(errors.EmptyKey):
            check_txn(txn(failure=[op]))
    with pytest.raises(errors.KeyNotFound):
        check_txn(txn(success=[RequestOp()]))
    with pytest.raises(errors.ValueProvided):
        check_txn(txn(success=[op_txn(failure=[op_put(b"k", b"v", ignore_value=True)])]))


@pytest.mark.parametrize(
    "operations",
    [
        [op_put(b"k"), op_put(b"k")],
        [op_put(b"k"), op_delete(b"k")],
        [op_delete(b"a", b"c"), op_put(b"b")],
        [op_put(b"ab"), op_delete(b"a", b"b")],
        [op_put(b"k"), op_txn(success=[op_put(b"k")])],
        [op_txn(failure=[op_put(b"k")]), op_put(b"k")],
        [op_txn(success=[op_put(b"k")]), op_txn(failure=[op_put(b"k")])],
        [op_txn(success=[op_txn(success=[op_delete(b"a", b"\x00")])]), op_put(b"z")],
    ],
)
def test_duplicate_keys(operations) -> None:
    """"It is not allowed to modify the same key several times within one
    txn": two puts of a key, or a put in a deleted range, on one path.
    "etcdserver: duplicate key given in txn request", InvalidArgument."""
    with pytest.raises(errors.DuplicateKey) as raised:
        check_txn(txn(success=operations))
    assert str(raised.value) == "etcdserver: duplicate key given in txn request"
    with pytest.raises(errors.DuplicateKey):
        check_txn(txn(failure=operations))


@pytest.mark.parametrize(
    "operations",
    [
        [op_put(b"a"), op_put(b"b"), op_delete(b"c", b"d")],
        [op_delete(b"a", b"c"), op_delete(b"b", b"d"), op_delete(b"b")],
        [op_txn(success=[op_put(b"k")], failure=[op_put(b"k")])],
        [op_txn(success=[op_put(b"k")], failure=[op_delete(b"k")])],
        [op_put(b"k"), op_range(b"k")],
        [op_delete(b"b", b"a"), op_put(b"a")],
        [op_delete(b"b", b"\x00"), op_put(b"a")],
    ],
)
def test_not_duplicates(operations) -> None:
    """Deletes may overlap; success and failure of a nested txn exclude
    each other; reads do not count; an end before the key deletes nothing."""
    check_txn(txn(success=operations))


def test_success_and_failure_are_separate_paths() -> None:
    check_txn(txn(success=[op_put(b"k")], failure=[op_put(b"k")]))


def test_where_we_refuse_what_etcd_lets_through() -> None:
    """etcd 3.4/3.5 check a from-key delete (range_end "\\0") as an empty
    interval (etcd-io/etcd#22395), and a put only against the deletes of
    nested txns before it (etcd-io/etcd#16380); both then write one key twice
    in one revision. We check both as what they are."""
    with pytest.raises(errors.DuplicateKey):
        check_txn(txn(success=[op_delete(b"a", b"\x00"), op_put(b"b")]))
    with pytest.raises(errors.DuplicateKey):
        check_txn(txn(success=[op_txn(success=[op_put(b"k")]), op_txn(success=[op_delete(b"k")])]))
    with pytest.raises(errors.DuplicateKey):
        check_txn(txn(success=[op_txn(success=[op_delete(b"k")]), op_txn(success=[op_put(b"k")])]))


def test_check_order_is_etcds() -> None:
    """Size, then compare keys, then operations, then duplicates: a txn
    wrong in several ways gets etcd's first error."""
    bad = txn(
        compare=[Compare()],
        success=[op_put(b"k"), op_put(b"k"), op_put(b"", b"v")],
    )
    with pytest.raises(errors.TooManyOps):
        check_txn(bad, max_txn_ops=2)
    with pytest.raises(errors.EmptyKey):
        check_txn(bad)
    bad.ClearField("compare")
    with pytest.raises(errors.EmptyKey):
        check_txn(bad)
    del bad.success[2]
    with pytest.raises(errors.DuplicateKey):
        check_txn(bad)
