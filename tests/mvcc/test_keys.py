"""The table encodings keep order: user keys in unsigned byte order (also
when one is a prefix of another, or holds 0x00 and 0xFF), revisions in
numeric order; they decode to what was encoded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dkv.mvcc.keys import (
    after_all_of,
    escape,
    in_span,
    index_key,
    index_span,
    is_empty,
    key_span,
    parse_index_key,
    parse_revision_key,
    revision_key,
)
from dkv.mvcc.records import KeyState, decode_state, encode_state

#: Short keys over few bytes, so prefixes and 0x00 / 0xFF runs are common.
user_keys = st.binary(max_size=5).map(lambda b: bytes(x % 4 * 85 for x in b)) | st.binary(max_size=8)
revisions = st.integers(min_value=0, max_value=2**63 - 1)


@given(a=user_keys, b=user_keys, ra=revisions, rb=revisions)
def test_index_keys_sort_by_key_then_revision(a: bytes, b: bytes, ra: int, rb: int) -> None:
    assert (index_key(a, ra) < index_key(b, rb)) == ((a, ra) < (b, rb))


@given(a=user_keys, b=user_keys, revision=revisions)
def test_all_entries_of_a_key_lie_between_its_bounds(a: bytes, b: bytes, revision: int) -> None:
    entry = index_key(b, revision)
    assert (escape(a) <= entry < after_all_of(a)) == (a == b)


@given(key=user_keys, revision=revisions)
def test_index_keys_decode(key: bytes, revision: int) -> None:
    assert parse_index_key(index_key(key, revision)) == (key, revision)


@given(a=st.tuples(revisions, revisions), b=st.tuples(revisions, revisions))
def test_revision_keys_sort_and_decode(a, b) -> None:
    assert (revision_key(*a) < revision_key(*b)) == (a < b)
    assert parse_revision_key(revision_key(*a)) == a


@given(start=user_keys, end=user_keys, key=user_keys, revision=revisions)
def test_index_spans_hold_the_entries_of_the_keys_in_span(start, end, key, revision) -> None:
    for span in (key_span(start, b""), key_span(start, b"\x00"), (start, end)):
        low, high = index_span(span)
        entry = index_key(key, revision)
        inside = low <= entry and (high is None or entry < high)
        assert inside == (in_span(key, span) and not is_empty(span))


def test_key_spans_follow_etcds_rule() -> None:
    """Empty range_end: the key alone; "\\0": every key >= key; else
    [key, range_end)."""
    assert key_span(b"a", b"") == (b"a", b"a\x00")
    assert key_span(b"a", b"\x00") == (b"a", None)
    assert key_span(b"a", b"b") == (b"a", b"b")
    assert is_empty(key_span(b"b", b"a")) and not is_empty(key_span(b"a", b"\x00"))


@given(
    state=st.builds(
        KeyState,
        mod_revision=revisions,
        sub=revisions,
        create_revision=revisions,
        version=revisions,
        lease=st.integers(min_value=-(2**63), max_value=2**63 - 1),
        tombstone=st.booleans(),
    )
)
def test_key_states_round_trip(state: KeyState) -> None:
    data = encode_state(state)
    assert len(data) == 41 and decode_state(data) == state
