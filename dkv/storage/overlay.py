# test-case-name: tests.test_overlay,tests.test_driver_simulation
"""Committed writes that are answered but not yet in the store.

The driver applies committed entries as soon as it knows them committed (they
are on a majority's disk) and answers their clients at once; the store gets
the same writes in the next durable transaction. Until then they live here,
and every read goes through an ``OverlayView``: these writes over a view of
the store. ``stored(index)`` forgets the writes of entries up to index once
the store holds them.

A view must be used and dropped within one reactor turn: a store view opened
before a transaction commits, used after ``stored`` dropped that
transaction's writes from here, would miss them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from dkv.storage.tables import Tables

#: A write as the store applies it: (table, key, value), value None = delete.
TableWrite = tuple[str, bytes, bytes | None]


class _Table:
    """One table's writes: the newest (index, value) per key, and the keys
    in order for scans. A write costs a dict entry (and, for a new key, an
    append); the order is made when a scan asks for it, by sorting the keys
    in order so far with the new ones after them (Timsort merges the two
    runs: linear in the keys)."""

    __slots__ = ("items", "_ordered", "_new")

    def __init__(self) -> None:
        self.items: dict[bytes, tuple[int, bytes | None]] = {}
        self._ordered: list[bytes] = []
        self._new: list[bytes] = []

    def record(self, index: int, key: bytes, value: bytes | None) -> None:
        items = self.items
        if key not in items:
            self._new.append(key)
        items[key] = (index, value)

    def span(self, start: bytes, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes | None]]:
        if self._new:
            self._ordered += self._new
            self._ordered.sort()
            self._new = []
        keys = self._ordered
        low = bisect.bisect_left(keys, start)
        high = len(keys) if end is None else bisect.bisect_left(keys, end)
        chosen = keys[low:high]
        if reverse:
            chosen.reverse()
        items = self.items
        return [(k, items[k][1]) for k in chosen]

    def drop_stored(self, index: int) -> None:
        """Forget the writes of entries up to index."""
        items = self.items
        stale = [k for k, (i, _) in items.items() if i <= index]
        if len(stale) == len(items):
            self.clear()
            return
        for k in stale:
            del items[k]
        if stale:
            self._ordered = [k for k in self._ordered if k in items]
            self._new = [k for k in self._new if k in items]

    def clear(self) -> None:
        self.items.clear()
        self._ordered = []
        self._new = []


class Overlay:
    """Newest write per (table, key), with the index of the entry that made it."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}

    def __len__(self) -> int:
        return sum(len(t.items) for t in self._tables.values())

    def view(self, base: Tables) -> OverlayView:
        """Reads: these writes over base."""
        return OverlayView(self, base)

    def writer(self, base: Tables) -> OverlayWriter:
        """Reads as ``view``; writes go here (at ``writer.index``) and into
        ``writer.writes``, the list the store will apply in order."""
        return OverlayWriter(self, base)

    def record(self, index: int, table: str, key: bytes, value: bytes | None) -> None:
        t = self._tables.get(table)
        if t is None:
            t = self._tables[table] = _Table()
        t.record(index, key, value)

    def lookup(self, table: str, key: bytes) -> tuple[bool, bytes | None]:
        """(True, value or None if deleted) when the overlay knows key."""
        t = self._tables.get(table)
        if t is None:
            return False, None
        hit = t.items.get(key)
        return (False, None) if hit is None else (True, hit[1])

    def span(self, table: str, start: bytes, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes | None]]:
        """The overlay's (key, value or None) for start <= key < end, in order."""
        t = self._tables.get(table)
        if t is None or not t.items:
            return []
        return t.span(start, end, reverse)

    def stored(self, index: int) -> None:
        """The store now holds every write of the entries up to index. A
        table left empty is kept (the same few tables fill again at the
        next apply)."""
        for t in self._tables.values():
            if t.items:
                t.drop_stored(index)

    def clear(self) -> None:
        self._tables.clear()


class OverlayView:
    """The overlay's writes over base (a ``Tables``)."""

    def __init__(self, overlay: Overlay, base: Tables) -> None:
        self._overlay = overlay
        self._base = base

    def get(self, table: str, key: bytes) -> bytes | None:
        hit, value = self._overlay.lookup(table, key)
        return value if hit else self._base.get(table, key)

    def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        over = self._overlay.span(table, start, end, reverse)
        base = self._base.scan(table, start, end, reverse=reverse)
        if not over:
            yield from base
            return
        yield from _merge(over, base, reverse)


class OverlayWriter(OverlayView):
    """An ``OverlayView`` that takes the state machine's writes."""

    def __init__(self, overlay: Overlay, base: Tables) -> None:
        super().__init__(overlay, base)
        #: The index of the entry being applied (set by the caller).
        self.index = 0
        self.writes: list[TableWrite] = []

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._overlay.record(self.index, table, key, value)
        self.writes.append((table, key, value))

    def delete(self, table: str, key: bytes) -> None:
        self._overlay.record(self.index, table, key, None)
        self.writes.append((table, key, None))


def _merge(
    over: list[tuple[bytes, bytes | None]], base: Iterator[tuple[bytes, bytes]], reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    """Both inputs in key order (descending if reverse); the overlay wins on
    equal keys and None hides a key."""
    i, n = 0, len(over)
    for key, value in base:
        while i < n and (over[i][0] > key if reverse else over[i][0] < key):
            okey, ovalue = over[i]
            i += 1
            if ovalue is not None:
                yield okey, ovalue
        if i < n and over[i][0] == key:
            okey, ovalue = over[i]
            i += 1
            if ovalue is not None:
                yield okey, ovalue
            continue
        yield key, value
    for okey, ovalue in over[i:]:
        if ovalue is not None:
            yield okey, ovalue
