# test-case-name: tests.test_tables
"""Ordered byte tables: the view of storage the replicated state machine works on.

The state machine (``dkv.mvcc``) never sees LMDB or the driver's overlay. It
reads and writes named tables of ``bytes -> bytes`` through these small
interfaces; the driver hands it a view of the applied state (for reads) or a
writable view over it (for applying committed entries). Implementations:
``MemoryTables`` here (tests, and the model of the contract), an overlay over
an LMDB read transaction in the product.

The contract every implementation keeps:

* a table is a set of distinct keys, each with one value; keys and values are
  any bytes (a key may be empty and may be longer than LMDB's 511-byte limit:
  the implementation hides that);
* ``scan`` yields ``(key, value)`` in unsigned byte order of the key
  (``reverse``: descending), over ``start <= key < end`` (``end`` None: no
  upper bound), and sees the writes made through the same view before it;
* a view is consistent: nothing but its own writes changes what it reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol


class Tables(Protocol):
    """A consistent, read-only view of the tables."""

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value of key in table, or None."""

    def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for start <= key < end, in key order (or reversed).
        The caller may stop early; it must not write through the view while
        iterating."""


class WritableTables(Tables, Protocol):
    """A view that also takes writes (one state machine apply step)."""

    def put(self, table: str, key: bytes, value: bytes) -> None: ...

    def delete(self, table: str, key: bytes) -> None:
        """Remove key (nothing happens if it is absent)."""


class MemoryTables:
    """Tables in memory: sorted key lists beside dicts. Fine for tests and
    small states; the product keeps its tables in LMDB."""

    def __init__(self) -> None:
        self._data: dict[str, dict[bytes, bytes]] = {}
        self._keys: dict[str, list[bytes]] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._data.get(table, {}).get(key)

    def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys.get(table, [])
        data = self._data.get(table, {})
        lo = bisect.bisect_left(keys, start)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        selected = keys[lo:hi]
        for key in reversed(selected) if reverse else selected:
            yield key, data[key]

    def put(self, table: str, key: bytes, value: bytes) -> None:
        data = self._data.setdefault(table, {})
        if key not in data:
            bisect.insort(self._keys.setdefault(table, []), key)
        data[key] = value

    def delete(self, table: str, key: bytes) -> None:
        data = self._data.get(table)
        if data is not None and data.pop(key, None) is not None:
            keys = self._keys[table]
            del keys[bisect.bisect_left(keys, key)]

    def tables(self) -> list[str]:
        """The names of the tables that ever held a key."""
        return sorted(self._data)
