# test-case-name: tests.mvcc.test_compaction
"""Compaction: drop the history a read at or above the compacted revision
no longer needs.

After ``compact(tables, previous, revision)`` the history and index hold, for
each key, its newest change at or below revision if that is a put (a Range at
revision reads it), and every change above revision; also every change *at*
revision, deletes included, so that the events of revision itself stay
complete (etcd drops a delete at exactly the compacted revision, and a watch
from that revision then misses it). Changes at the compacted revision that
are no longer needed go at the next compaction.

The work is proportional to the history written since the previous
compaction, not to the size of the store: every change that becomes
unneeded is either a delete below revision or the predecessor (same key,
older) of a change at or below revision, and all those changes lie in
[previous, revision] -- anything older was dropped, or kept as the newest
at ``previous``, by the previous compaction. Deterministic: the same tables
and arguments give the same tables on every replica.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING

from dkv.mvcc.keys import escape, index_key, parse_revision_key, revision_key
from dkv.mvcc.layout import HISTORY, INDEX
from dkv.mvcc.records import decode_state, is_tombstone
from dkv.pb.etcd_kv_pb2 import KeyValue

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; the store needs only the protocols
    from dkv.storage.tables import WritableTables


#: Changes read per scan. The tables may not be written while a scan is open:
#: each scan here is read into a list (or its first item taken) and dropped
#: before the writes, which closes it.
BATCH = 1000


def compact(tables: WritableTables, previous: int, revision: int) -> int:
    """Drop what a read at >= revision no longer needs (``previous``: the
    last compacted revision, -1 for none); return the number of changes
    dropped."""
    dropped = 0
    position = revision_key(max(previous, 0))
    end = revision_key(revision + 1)
    while True:
        batch = list(islice(tables.scan(HISTORY, position, end), BATCH))
        if not batch:
            return dropped
        for rkey, data in batch:
            main, sub = parse_revision_key(rkey)
            record = KeyValue.FromString(data)
            dropped += _drop_predecessor(tables, record.key, main)
            if is_tombstone(record) and main < revision:
                tables.delete(INDEX, index_key(record.key, main))
                tables.delete(HISTORY, rkey)
                dropped += 1
        position = revision_key(main, sub + 1)


def _drop_predecessor(tables: WritableTables, key: bytes, main: int) -> int:
    """Drop the change of key just before revision main, if there is one."""
    entry = next(tables.scan(INDEX, escape(key), index_key(key, main), reverse=True), None)
    if entry is None:
        return 0
    state = decode_state(entry[1])
    tables.delete(INDEX, entry[0])
    tables.delete(HISTORY, revision_key(state.mod_revision, state.sub))
    return 1
