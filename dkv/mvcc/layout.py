# test-case-name: tests.mvcc.test_store
"""The names of the store's tables and its two counters (the on-disk format
is described in the package docstring, ``dkv.mvcc``)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; the store needs only the protocols
    from dkv.storage.tables import Tables, WritableTables



HISTORY = "mvcc.history"
INDEX = "mvcc.index"
LIVE = "mvcc.live"
META = "mvcc.meta"
#: Leases (``dkv.mvcc.leases``): id (i64) -> granted TTL (i64); id + key -> b"".
LEASES = "lease.leases"
LEASE_KEYS = "lease.keys"

#: META keys: the current revision (absent: 1, an empty store) and the
#: compacted revision (absent: -1, never compacted; etcd's starting values).
REVISION = b"revision"
COMPACTED = b"compacted"
DEFAULTS = {REVISION: 1, COMPACTED: -1}

_I64 = struct.Struct(">q")


def read_counter(tables: Tables, name: bytes) -> int:
    data = tables.get(META, name)
    return DEFAULTS[name] if data is None else _I64.unpack(data)[0]


def write_counter(tables: WritableTables, name: bytes, value: int) -> None:
    tables.put(META, name, _I64.pack(value))
