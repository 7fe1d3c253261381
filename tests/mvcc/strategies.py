"""Hypothesis strategies for etcd KV requests over a small set of keys that
collide often and sit on the encoding's edges (prefixes of each other, 0x00
and 0xFF bytes)."""

from __future__ import annotations

from hypothesis import strategies as st

from dkv.pb.etcd_rpc_pb2 import Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest

KEYS = [b"a", b"a\x00", b"a\x00\x00", b"a\xff", b"ab", b"abc", b"b", b"\x00", b"\x01", b"\xff", b"\xff\xff"]
VALUES = [b"", b"x", b"y", b"z\x00"]

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
leases = st.sampled_from([0, 0, 0, 5, 7])


def prefix_end(key: bytes) -> bytes:
    """etcd's prefix range end: the key with its last non-0xFF byte plus
    one, or "\\0" (every key) if it is all 0xFF."""
    stripped = key.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\x00"


@st.composite
def spans(draw) -> tuple[bytes, bytes]:
    """(key, range_end): one key, from key, a prefix, or [key, other)."""
    key = draw(keys)
    kind = draw(st.sampled_from(["one", "one", "from", "prefix", "to"]))
    if kind == "one":
        return key, b""
    if kind == "from":
        return key, b"\x00"
    if kind == "prefix":
        return key, prefix_end(key)
    return key, draw(keys)


@st.composite
def puts(draw) -> PutRequest:
    key = draw(keys)
    ignore_value = draw(st.integers(0, 9)) == 0
    ignore_lease = draw(st.integers(0, 9)) == 0
    return PutRequest(
        key=key,
        value=b"" if ignore_value else draw(values),
        lease=0 if ignore_lease else draw(leases),
        prev_kv=draw(st.booleans()),
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


@st.composite
def deletes(draw) -> DeleteRangeRequest:
    key, range_end = draw(spans())
    return DeleteRangeRequest(key=key, range_end=range_end, prev_kv=draw(st.booleans()))


def ranges(revisions: st.SearchStrategy[int]) -> st.SearchStrategy[RangeRequest]:
    @st.composite
    def build(draw) -> RangeRequest:
        key, range_end = draw(spans())
        bound = st.sampled_from([0] * 12 + [1, 2, 3, 4, 6, 9])
        return RangeRequest(
            key=key,
            range_end=range_end,
            limit=draw(st.sampled_from([0, 0, 1, 2, 3, -1])),
            revision=draw(revisions),
            sort_order=draw(st.sampled_from([0, 0, 1, 2])),
            sort_target=draw(st.sampled_from([0, 0, 1, 2, 3, 4])),
            keys_only=draw(st.booleans()),
            count_only=draw(st.integers(0, 9)) == 0,
            min_mod_revision=draw(bound),
            max_mod_revision=draw(bound),
            min_create_revision=draw(bound),
            max_create_revision=draw(bound),
        )

    return build()


@st.composite
def compares(draw) -> Compare:
    key, range_end = draw(spans())
    compare = Compare(
        key=key,
        range_end=range_end,
        target=draw(st.sampled_from(list(Compare.CompareTarget.values()))),
        result=draw(st.sampled_from(list(Compare.CompareResult.values()))),
    )
    if compare.target == Compare.VALUE:
        compare.value = draw(values)
    elif compare.target == Compare.LEASE:
        compare.lease = draw(leases)
    else:
        number = draw(st.integers(0, 8))
        field = {Compare.VERSION: "version", Compare.CREATE: "create_revision", Compare.MOD: "mod_revision"}
        setattr(compare, field[compare.target], number)
    return compare


def txns(revisions: st.SearchStrategy[int], depth: int = 2) -> st.SearchStrategy[TxnRequest]:
    leaf = st.one_of(
        ranges(revisions).map(lambda r: RequestOp(request_range=r)),
        puts().map(lambda p: RequestOp(request_put=p)),
        deletes().map(lambda d: RequestOp(request_delete_range=d)),
    )
    if depth > 0:
        op = st.one_of(leaf, leaf, leaf, txns(revisions, depth - 1).map(lambda t: RequestOp(request_txn=t)))
    else:
        op = leaf
    return st.builds(
        TxnRequest,
        compare=st.lists(compares(), max_size=3),
        success=st.lists(op, max_size=3),
        failure=st.lists(op, max_size=3),
    )
