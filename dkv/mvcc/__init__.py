# test-case-name: tests.mvcc
"""etcd's multi-version key-value store, as a deterministic state machine.

``MvccStore`` (writes: Put, DeleteRange, Txn, Compact) and ``MvccView``
(reads: Range, the event history, HashKV) work on ``dkv.storage.tables``
views and take and return etcd's protobuf messages (``dkv.pb.etcd_rpc_pb2``,
``dkv.pb.etcd_kv_pb2``). Nothing here reads a clock, a random source, the
network or the disk; ``errors`` holds etcd's errors, ``checks`` its request
checks.

Revisions: the store starts at revision 1; every write that changes
something makes exactly one new revision ``main``, and its changes are
numbered ``sub`` = 0, 1, ... in the order it makes them (at most one change
per key per revision: the txn checks refuse the rest).

The on-disk format (four tables, plus the two of the leases; integers are big-endian, so byte order is
numeric order):

``mvcc.history`` -- every change kept, the truth the others derive from.
    key: main (u64) + sub (u64), 16 bytes.
    value: the serialized ``mvccpb.KeyValue`` of the change: a put's full
    version (key, create_revision, mod_revision = main, version, value,
    lease); a delete's key and mod_revision = main only, create_revision 0.
``mvcc.index`` -- every change kept, by key then revision.
    key: the user key escaped (0x00 -> 0x00 0xFF, then 0x00 0x01), then main
    (u64); order-preserving, and no key's entries interleave another's.
    value: a ``KeyState``, 41 bytes: tombstone flag (u8), mod_revision,
    sub, create_revision, version, lease (i64 each); a delete's has the
    flag set and zeros for the last three.
``mvcc.live`` -- the keys that exist now.
    key: the user key, as is.
    value: the ``KeyState`` of its current version (flag 0).
``mvcc.meta`` -- two counters (i64): ``revision`` (absent: 1) and
    ``compacted`` (absent: -1, never compacted).
``lease.leases``, ``lease.keys`` -- the leases and their keys
    (``dkv.mvcc.leases``; ``dkv.mvcc.lease_ops`` grants and revokes).

A Range at the current revision scans ``mvcc.live`` over the range and reads
``mvcc.history`` only for the values it returns (none for keys_only or
count_only); at an older revision it takes two index seeks per key that has
history in the range. The events of revisions [a, b] are the range scan of
``mvcc.history`` from (a, 0) to (b + 1, 0). A put writes three table entries
(history, index, live) plus the revision counter once per write; a deleted
key writes three (history, index, and the delete from live).
"""

from dkv.mvcc.checks import DEFAULT_MAX_TXN_OPS, check_delete_range, check_put, check_range, check_txn
from dkv.mvcc.leases import Leases, NoLeases
from dkv.mvcc.store import MvccStore, Written
from dkv.mvcc.view import MvccView

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "Leases",
    "MvccStore",
    "MvccView",
    "NoLeases",
    "Written",
    "check_delete_range",
    "check_put",
    "check_range",
    "check_txn",
]
