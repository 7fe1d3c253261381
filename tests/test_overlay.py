"""The overlay of committed writes not yet in the store: reads through it
equal reads of the store with those writes applied, and ``stored`` forgets
exactly what the store now holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.storage.overlay import Overlay
from dkv.storage.tables import MemoryTables

KEYS = st.binary(max_size=3)
WRITES = st.lists(st.tuples(st.sampled_from(["a", "b"]), KEYS, st.none() | st.binary(max_size=2)), max_size=30)


def _apply(tables: MemoryTables, writes) -> None:
    for table, key, value in writes:
        if value is None:
            tables.delete(table, key)
        else:
            tables.put(table, key, value)


@settings(max_examples=300, deadline=None)
@given(stored=WRITES, batch1=WRITES, batch2=WRITES, start=KEYS, end=st.none() | KEYS, reverse=st.booleans())
def test_reads_through_the_overlay_are_reads_of_the_applied_state(stored, batch1, batch2, start, end, reverse) -> None:
    base = MemoryTables()
    _apply(base, stored)
    expected = MemoryTables()
    _apply(expected, stored + batch1 + batch2)
    overlay = Overlay()
    writer = overlay.writer(base)
    after_one = MemoryTables()
    _apply(after_one, stored + batch1)
    for index, batch in ((7, batch1), (8, batch2)):
        writer.index = index
        for table, key, value in batch:
            if value is None:
                writer.delete(table, key)
            else:
                writer.put(table, key, value)
        if index == 7:  # a scan between writes: the order it made takes the next writes
            for table in ("a", "b"):
                assert list(writer.scan(table, start, end, reverse=reverse)) == list(
                    after_one.scan(table, start, end, reverse=reverse)
                )
    assert writer.writes == [w for w in batch1 + batch2]
    view = overlay.view(base)
    for table in ("a", "b"):
        assert list(view.scan(table, start, end, reverse=reverse)) == list(
            expected.scan(table, start, end, reverse=reverse)
        )
        for key in {k for _, k, _ in stored + batch1 + batch2} | {start}:
            assert view.get(table, key) == expected.get(table, key)
    # The store takes batch 1: the overlay keeps only what batch 2 wrote last.
    _apply(base, batch1)
    overlay.stored(7)
    for table in ("a", "b"):
        assert list(overlay.view(base).scan(table, start, end, reverse=reverse)) == list(
            expected.scan(table, start, end, reverse=reverse)
        )
    # Batch 1 again, over what is left: the order kept takes the new keys.
    writer = overlay.writer(base)
    writer.index = 9
    for table, key, value in batch1:
        if value is None:
            writer.delete(table, key)
        else:
            writer.put(table, key, value)
    _apply(expected, batch1)
    for table in ("a", "b"):
        assert list(overlay.view(base).scan(table, start, end, reverse=reverse)) == list(
            expected.scan(table, start, end, reverse=reverse)
        )
    _apply(base, batch2 + batch1)
    overlay.stored(9)
    assert len(overlay) == 0


def test_tables_emptied_by_stored_take_writes_again() -> None:
    base = MemoryTables()
    overlay = Overlay()
    for index in (1, 2, 3):
        writer = overlay.writer(base)
        writer.index = index
        writer.put("a", b"k%d" % index, b"v")
        writer.delete("b", b"gone")
        assert overlay.view(base).get("a", b"k%d" % index) == b"v"
        assert list(overlay.view(base).scan("a")) == [(b"k%d" % i, b"v") for i in range(1, index + 1)]
        assert len(overlay) == 2
        _apply(base, writer.writes)
        overlay.stored(index)
        assert len(overlay) == 0
        assert overlay.lookup("a", b"k%d" % index) == (False, None)
        assert list(overlay.view(base).scan("a")) == [(b"k%d" % i, b"v") for i in range(1, index + 1)]
