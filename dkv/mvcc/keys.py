# test-case-name: tests.mvcc.test_keys
"""Byte encodings of the store's table keys, all order-preserving.

* ``revision_key(main, sub)``: 16 bytes, main then sub, each unsigned 64-bit
  big-endian, so byte order is revision order (revisions are never negative).
* ``index_key(key, main)``: ``escape(key) + main`` (8 bytes big-endian), where
  ``escape`` doubles every 0x00 byte as 0x00 0xFF and ends the key with 0x00
  0x01. The escape keeps unsigned byte order between user keys, and no
  escaped key is a prefix of another, so all of a key's index entries sit
  together, in revision order, between ``escape(key)`` and
  ``after_all_of(key)`` -- also when one user key is a prefix of another
  ("a" < "a\\x00" < "ab").
* ``key_span(key, range_end)``: etcd's range rule turned into a half-open span
  of user keys: an empty range_end means the key alone, ``b"\\0"`` means every
  key >= key, anything else is [key, range_end).
"""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")
_REVISION = struct.Struct(">QQ")

#: The end of an escaped key (0x00 followed by 0x01); 0x00 0x02 sorts after
#: every index entry of that key and before every greater key.
_END = b"\x00\x01"
_AFTER = b"\x00\x02"

#: etcd's "no upper bound" range_end.
FROM_KEY = b"\x00"

#: A user-key span [start, end); end None: no upper bound.
Span = tuple[bytes, bytes | None]


def revision_key(main: int, sub: int = 0) -> bytes:
    """The history table key of change ``sub`` of revision ``main``."""
    return _REVISION.pack(main, sub)


def parse_revision_key(data: bytes) -> tuple[int, int]:
    """(main, sub) of a history table key."""
    return _REVISION.unpack(data)


def escape(key: bytes) -> bytes:
    """The order-preserving, prefix-free encoding of a user key."""
    return key.replace(b"\x00", b"\x00\xff") + _END


def index_key(key: bytes, main: int) -> bytes:
    """The index table key of ``key``'s change at revision ``main``."""
    return escape(key) + _U64.pack(main)


def after_all_of(key: bytes) -> bytes:
    """A bound above every index entry of ``key`` and below every entry of
    any greater user key."""
    return key.replace(b"\x00", b"\x00\xff") + _AFTER


def parse_index_key(data: bytes) -> tuple[bytes, int]:
    """(user key, main revision) of an index table key."""
    return data[:-10].replace(b"\x00\xff", b"\x00"), _U64.unpack_from(data, len(data) - 8)[0]


def key_span(key: bytes, range_end: bytes) -> Span:
    """The user keys a request's (key, range_end) names, as [start, end)."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def index_span(span: Span) -> Span:
    """The index table keys of every change of every user key in span."""
    start, end = span
    return escape(start), None if end is None else escape(end)


def in_span(key: bytes, span: Span) -> bool:
    start, end = span
    return start <= key and (end is None or key < end)


def is_empty(span: Span) -> bool:
    start, end = span
    return end is not None and end <= start
