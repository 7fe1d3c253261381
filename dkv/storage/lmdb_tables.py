# test-case-name: tests.test_tables,tests.test_storage
"""Ordered tables (``dkv.storage.tables``) in one LMDB database.

Every table lives in the same named LMDB database (the node's state, which
snapshots copy whole), under a one-byte prefix of its own: the state
machine's table names map to fixed prefix bytes (``TABLE_IDS``; adding a
table means adding a byte, never renumbering).

LMDB keys are at most 511 bytes; table keys may be longer. A key is stored
under ``prefix + k`` when it has at most ``SHORT`` bytes, else under
``prefix + k[:SHORT] + sha256(k)[:16]``; the value is stored as ``b"\\x00" +
value``, or, for a long key, ``b"\\x01" + len(k) (u32) + k + value`` (the whole
key is kept). This keeps byte order exactly, except among long keys that share
their first ``SHORT`` bytes: those sort by digest, and ``scan`` puts such a run
back in key order. Such a run is contiguous: no other key sorts between two
of its members.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping
from typing import Any, cast

import lmdb

#: Keys up to this many bytes are stored as they are.
SHORT = 478
_DIGEST = 16
_SHORT_VALUE = b"\x00"
_LONG_VALUE = b"\x01"
_LEN = struct.Struct(">I")

#: The state machine's tables and their prefix bytes (part of the on-disk format).
TABLE_IDS: Mapping[str, int] = {
    "mvcc.history": 1,
    "mvcc.index": 2,
    "mvcc.live": 3,
    "mvcc.meta": 4,
    "lease.leases": 9,
    "lease.keys": 10,
    # dkv.auth.store
    "auth.users": 16,
    "auth.roles": 17,
    "auth.meta": 18,
    # dkv.idempotency (high bytes: other tables may take the next ones).
    "idem.records": 32,
    "idem.expiry": 33,
    "idem.meta": 34,
    # dkv.alarms
    "alarm.members": 40,
}


class UnknownTable(KeyError):
    """A table name without a prefix byte in TABLE_IDS."""


#: Each table's prefix byte, made once (every read and write looks one up).
_PREFIXES = {table: bytes((number,)) for table, number in TABLE_IDS.items()}


def _prefix(table: str) -> bytes:
    try:
        return _PREFIXES[table]
    except KeyError:
        raise UnknownTable(table) from None


def _stored_key(prefix: bytes, key: bytes) -> bytes:
    if len(key) <= SHORT:
        return prefix + key
    return prefix + key[:SHORT] + hashlib.sha256(key).digest()[:_DIGEST]


def _stored_value(key: bytes, value: bytes) -> bytes:
    if len(key) <= SHORT:
        return _SHORT_VALUE + value
    return _LONG_VALUE + _LEN.pack(len(key)) + key + value


def _decode(stored_key: bytes, raw: bytes) -> tuple[bytes, bytes, bool]:
    """(key, value, long?) of a stored record (stored_key without its prefix)."""
    if raw[:1] == _SHORT_VALUE:
        return stored_key, raw[1:], False
    n = _LEN.unpack_from(raw, 1)[0]
    start = 1 + _LEN.size
    return raw[start : start + n], raw[start + n :], True


class LmdbTables:
    """The tables in ``db`` as seen by ``txn`` (a read transaction: a
    consistent view; a write transaction: writes too). Not thread-safe; use
    it on the thread that owns the transaction."""

    def __init__(self, txn: lmdb.Transaction, db: Any) -> None:
        self._txn = txn
        self._db = db

    def get(self, table: str, key: bytes) -> bytes | None:
        short = len(key) <= SHORT
        raw = self._txn.get(_prefix(table) + key if short else _stored_key(_prefix(table), key), db=self._db)
        if raw is None:
            return None
        if short:  # stored as it is, its value after the flag byte
            return cast(bytes, raw)[1:]
        found, value, _ = _decode(key, cast(bytes, raw))
        return value if found == key else None  # (a digest collision: never seen)

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._txn.put(_stored_key(_prefix(table), key), _stored_value(key, value), db=self._db)

    def delete(self, table: str, key: bytes) -> None:
        self._txn.delete(_stored_key(_prefix(table), key), db=self._db)

    def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        prefix = _prefix(table)
        records = self._backward(prefix, end) if reverse else self._forward(prefix, start)
        for key, value in _in_key_order(records, reverse):
            if key < start:
                if reverse:
                    return
                continue
            if end is not None and key >= end:
                if reverse:
                    continue
                return
            yield key, value

    def _forward(self, prefix: bytes, start: bytes) -> Iterator[tuple[bytes, bytes, bool]]:
        """Records of the table from where start's bucket begins, ascending."""
        cursor = self._txn.cursor(db=self._db)
        more = cursor.set_range(prefix + start[:SHORT])
        n = len(prefix)
        while more:
            stored = cast(bytes, cursor.key())
            if stored[:n] != prefix:
                return
            yield _decode(stored[n:], cast(bytes, cursor.value()))
            more = cursor.next()

    def _backward(self, prefix: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes, bool]]:
        """Records of the table from past end's bucket, descending."""
        cursor = self._txn.cursor(db=self._db)
        if end is None:
            bound = bytes((prefix[0] + 1,))
        elif len(end) <= SHORT:
            bound = prefix + end
        else:  # past the whole bucket of keys sharing end's first SHORT bytes
            bound = prefix + end[:SHORT] + b"\xff" * (_DIGEST + 1)
        positioned = cursor.set_range(bound)
        more = cursor.prev() if positioned else cursor.last()
        n = len(prefix)
        while more:
            stored = cast(bytes, cursor.key())
            if stored[:n] != prefix:
                return
            yield _decode(stored[n:], cast(bytes, cursor.value()))
            more = cursor.prev()


def _in_key_order(records: Iterator[tuple[bytes, bytes, bool]], reverse: bool) -> Iterator[tuple[bytes, bytes]]:
    """Records in exact key order: a run of long keys sharing their first
    SHORT bytes (stored in digest order) is sorted by key."""
    run: list[tuple[bytes, bytes]] = []
    for key, value, long in records:
        if run and (not long or key[:SHORT] != run[0][0][:SHORT]):
            yield from sorted(run, reverse=reverse)
            run = []
        if long:
            run.append((key, value))
        else:
            yield key, value
    yield from sorted(run, reverse=reverse)
