"""Which keys a request needs and whether a user's roles cover them."""

from __future__ import annotations

from dkv.auth.permissions import Access, Grants, Span, covered, merge, put_needs, span, txn_needs
from dkv.pb.etcd_auth_pb2 import Permission, Role
from dkv.pb.etcd_rpc_pb2 import Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest

READ, WRITE = Access.READ, Access.WRITE


def role(name: str, *perms: tuple[int, bytes, bytes]) -> Role:
    return Role(name=name.encode(), keyPermission=[Permission(permType=t, key=k, range_end=e) for t, k, e in perms])


ROLES = {
    "app-reader": role("app-reader", (Permission.READ, b"/app/", b"/app0")),
    "one-key": role("one-key", (Permission.READWRITE, b"/cfg", b"")),
    "writer": role("writer", (Permission.WRITE, b"/w/", b"/w0")),
    "from-m": role("from-m", (Permission.READ, b"m", b"\x00")),
    "left": role("left", (Permission.READ, b"a", b"c")),
    "right": role("right", (Permission.READ, b"c", b"e")),
}


def test_a_range_reads_as_etcds() -> None:
    assert span(b"k") == Span(b"k", b"k\x00")
    assert span(b"k", b"\x00") == Span(b"k", None)
    assert span(b"a", b"b") == Span(b"a", b"b")
    assert span(b"b", b"a") == Span(b"b", b"b\x00")  # empty: checked as the one key


def test_merging_joins_overlapping_and_touching_spans() -> None:
    assert merge([Span(b"c", b"e"), Span(b"a", b"c")]) == (Span(b"a", b"e"),)
    assert merge([Span(b"a", b"b"), Span(b"x", None), Span(b"y", b"z")]) == (Span(b"a", b"b"), Span(b"x", None))
    assert covered(merge([Span(b"a", b"c"), Span(b"c", b"e")]), Span(b"b", b"d"))
    assert not covered((Span(b"a", b"c"), Span(b"d", b"e")), Span(b"b", b"d"))


def test_a_reader_of_a_prefix_reads_inside_it_and_nothing_else() -> None:
    g = Grants.of(["app-reader"], ROLES)
    assert g.allows(READ, b"/app/x")
    assert g.allows(READ, b"/app/", b"/app0")  # the prefix itself
    assert g.allows(READ, b"/app/a", b"/app/b")
    assert not g.allows(WRITE, b"/app/x")
    assert not g.allows(READ, b"/other")
    assert not g.allows(READ, b"/app", b"/app0")  # wider than the grant
    assert not g.allows(READ, b"\x00", b"\x00")  # every key
    assert not g.allows(READ, b"/app/", b"\x00")  # from /app/ on


def test_a_single_key_permission_covers_that_key_only() -> None:
    g = Grants.of(["one-key"], ROLES)
    assert g.allows(READ, b"/cfg") and g.allows(WRITE, b"/cfg")
    assert not g.allows(READ, b"/cfg2")
    assert not g.allows(READ, b"/cfg", b"/cfh")


def test_from_key_permissions_and_roles_merge() -> None:
    assert Grants.of(["from-m"], ROLES).allows(READ, b"zzz", b"\x00")
    assert not Grants.of(["from-m"], ROLES).allows(READ, b"a")
    both = Grants.of(["left", "right"], ROLES)
    assert both.allows(READ, b"b", b"d")  # needs both roles' spans
    assert not Grants.of(["left"], ROLES).allows(READ, b"b", b"d")


def test_root_may_do_anything_and_unknown_roles_grant_nothing() -> None:
    assert Grants.of(["root"], {}).allows(WRITE, b"\x00", b"\x00")
    assert not Grants.of(["gone"], ROLES).allows(READ, b"/app/x")


def test_a_put_returning_the_previous_value_needs_read_too() -> None:
    assert list(put_needs(PutRequest(key=b"k"))) == [(WRITE, b"k", b"")]
    assert list(put_needs(PutRequest(key=b"k", prev_kv=True))) == [(WRITE, b"k", b""), (READ, b"k", b"")]


def test_a_txn_needs_every_key_of_both_branches_and_nested_txns() -> None:
    nested = TxnRequest(
        compare=[Compare(key=b"n-cmp")],
        failure=[RequestOp(request_delete_range=DeleteRangeRequest(key=b"n-del", range_end=b"n-dez"))],
    )
    txn = TxnRequest(
        compare=[Compare(key=b"cmp", range_end=b"cmq")],
        success=[RequestOp(request_put=PutRequest(key=b"put")), RequestOp(request_txn=nested)],
        failure=[RequestOp(request_range=RangeRequest(key=b"rng"))],
    )
    assert list(txn_needs(txn)) == [
        (READ, b"cmp", b"cmq"),
        (WRITE, b"put", b""),
        (READ, b"n-cmp", b""),
        (WRITE, b"n-del", b"n-dez"),
        (READ, b"rng", b""),
    ]
    reader = Grants.of(["app-reader"], ROLES)
    only_reads = TxnRequest(
        compare=[Compare(key=b"/app/a")], failure=[RequestOp(request_range=RangeRequest(key=b"/app/b"))]
    )
    assert reader.allows_all(txn_needs(only_reads))
    writes = TxnRequest(success=[RequestOp(request_put=PutRequest(key=b"/app/a"))])
    assert not reader.allows_all(txn_needs(writes))
