# test-case-name: tests.test_backup
"""What a backup file holds (``dkvctl snapshot status``, etcdctl's ``snapshot
status``), read from the file alone, read-only.

``hash`` is the file's ``HashKV`` at its revision (dkv's CRC-32 of the
history, ``dkv.mvcc.view``), so it can be compared with ``dkvctl hashkv
--rev REVISION`` on the cluster it came from or on one restored from it
(etcd's is a hash of its bbolt file). ``total_keys`` counts the keys that
exist at the revision (etcd counts every key of its backend's buckets).
"""

from __future__ import annotations

from typing import Any

import attrs

from dkv.mvcc import MvccView
from dkv.mvcc.layout import LEASES, LIVE
from dkv.raft.membership import Member
from dkv.storage import restore, snapshot_file


@attrs.frozen
class SnapshotStatus:
    path: str
    #: HashKV at ``revision`` and the compacted revision it covers.
    hash: int
    revision: int
    compact_revision: int
    total_keys: int
    #: Bytes of the whole file (the db and its SHA-256).
    total_size: int
    leases: int
    #: SHA-256 of the db (hex), what the file ends with.
    sha256: str
    has_trailer: bool
    #: The cluster the backup was taken from, its members, the applied index.
    cluster_id: str
    members: tuple[Member, ...]
    applied_index: int

    def as_json(self) -> dict[str, Any]:
        """etcdctl's ``-w json`` fields (hash, revision, totalKey, totalSize), and dkv's."""
        return {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_keys,
            "totalSize": self.total_size,
            "compactRevision": self.compact_revision,
            "leases": self.leases,
            "sha256": self.sha256,
            "clusterId": self.cluster_id,
            "members": [{"id": m.id, "address": m.address, "voter": m.voter} for m in self.members],
            "appliedIndex": self.applied_index,
        }


def _count(tables: Any, table: str) -> int:
    return sum(1 for _ in tables.scan(table))


def status(path: str, skip_hash_check: bool = False) -> SnapshotStatus:
    """The status of the backup at path. Raises SnapshotFileError (not whole)
    or StorageError (not a dkv db)."""
    checked = snapshot_file.check(path, skip_hash_check)
    with restore.reading(path) as (info, tables):
        view = MvccView(tables)
        digest, compacted = view.hash_kv(0)
        return SnapshotStatus(
            path=path,
            hash=digest,
            revision=view.revision,
            compact_revision=compacted,
            total_keys=_count(tables, LIVE),
            total_size=checked.db_bytes + (snapshot_file.TRAILER if checked.has_trailer else 0),
            leases=_count(tables, LEASES),
            sha256=checked.sha256,
            has_trailer=checked.has_trailer,
            cluster_id=info.cluster_id,
            members=info.membership.members,
            applied_index=info.applied,
        )
