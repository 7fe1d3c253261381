# test-case-name: tests.test_backup
"""Make a backup (``dkv.storage.snapshot_file``) the db of a member of a new
cluster -- ``dkv restore``, etcdutl's ``snapshot restore``.

A backup is a copy of one node's whole LMDB db (``dkv.storage.lmdb_store``).
Restoring keeps its applied state -- the state machine's tables: the
multi-version store with every revision and its history, the leases, the
idempotency records, and any other table the state holds (auth, when it
exists) -- byte for byte, and replaces everything that belongs to the old
cluster's Raft:

* ``cluster_id``: the new cluster's (``restored_cluster_id``);
* the log: empty; its base (``snapshot``) is the backup's applied index
  ``I`` (at least 1), term 1, with the new member list as the
  configuration, so the state is a snapshot of ``I`` that every member
  already holds;
* the hard state: term 1, no vote, commit ``I``; ``applied`` = ``I``;
* a snapshot half received from a peer (the staging table and its progress)
  is dropped.

Every member restored from the same file with the same member list gets an
identical db (only the file's name differs), so the new cluster elects a
leader at term 2 and its first entry is ``I + 1``. The work is done in a
temporary file beside the db path, which becomes the db path only once
complete (a crash leaves at most a ``.restore-*.tmp`` file, never a half db),
and an existing non-empty db is never replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any, cast

import attrs
import lmdb

from dkv.raft.membership import Membership
from dkv.raft.messages import EntryKind, HardState, SnapshotMeta
from dkv.storage import StorageError
from dkv.storage.lmdb_store import (
    _INDEX,
    DEFAULT_MAP_SIZE,
    FORMAT,
    _decode_snapshot,
    _encode_hard_state,
    _encode_snapshot,
    decode_entry,
)
from dkv.storage.lmdb_tables import LmdbTables
from dkv.storage.snapshot_file import SnapshotFile, copy_db

#: The term the restored log's base carries; the first election makes term 2.
RESTORED_TERM = 1


def restored_cluster_id(membership: Membership, db_sha256: str, token: str = "") -> str:
    """The new cluster's id: derived, as ``--cluster`` bootstrap derives
    one, from the member list, with the backup's SHA-256 and the token mixed
    in, so it is the same for every member restored from one file with one
    member list, and differs from the old cluster's (even with the same
    members) and from a restore of another backup. A token tells apart two
    restores of the same file onto the same members."""
    digest = hashlib.sha256()
    digest.update(b"dkv-restore\x00")
    digest.update(membership.encode())
    digest.update(b"\x00" + bytes.fromhex(db_sha256))
    digest.update(b"\x00" + token.encode())
    return digest.hexdigest()[:16]


@attrs.frozen
class DbInfo:
    """What a node's db says about itself (read-only)."""

    cluster_id: str
    applied: int
    #: The log's base (index, term, configuration).
    snapshot: SnapshotMeta
    #: The log's entries.
    log_entries: int
    #: The latest configuration: the log's last CONFIG entry, else the base's.
    membership: Membership


@attrs.frozen
class Restored:
    db_path: str
    cluster_id: str
    #: The old cluster's id, as the backup recorded it.
    old_cluster_id: str
    #: The index the restored log starts after (the backup's applied index).
    index: int
    membership: Membership


def _open_env(path: str, readonly: bool) -> lmdb.Environment:
    try:
        return lmdb.open(
            path, subdir=False, readonly=readonly, lock=False, max_dbs=8,
            map_size=DEFAULT_MAP_SIZE, readahead=False,
        )  # fmt: skip
    except lmdb.Error as e:
        raise StorageError(f"{path} is not a dkv db: {e}") from None


def _named(env: lmdb.Environment, name: bytes, path: str) -> Any:
    try:
        return env.open_db(name, create=False)
    except lmdb.Error:
        raise StorageError(f"{path} is not a dkv db (it has no {name.decode()!r} database)") from None


def _check_node_db(txn: lmdb.Transaction, meta: Any, path: str) -> tuple[str, int]:
    """(old cluster id, applied index); StorageError unless txn sees a node's
    db of this format."""
    fmt = txn.get(b"format", db=meta)
    if fmt != FORMAT:
        raise StorageError(f"{path} is not a dkv db of format {FORMAT.decode()} (format {fmt!r})")
    cluster_id = txn.get(b"cluster_id", db=meta)
    if cluster_id is None:
        raise StorageError(f"{path} is an empty dkv db (it never joined a cluster): nothing to restore")
    raw = txn.get(b"applied", db=meta)
    return bytes(cluster_id).decode(), _INDEX.unpack(raw)[0] if raw else 0


@contextlib.contextmanager
def reading(path: str) -> Iterator[tuple[DbInfo, LmdbTables]]:
    """Open the db (or backup file) at path read-only, without a lock file:
    what it says about itself and its applied tables, for one ``with``
    block. Raises StorageError when path is not a node's db."""
    env = _open_env(path, readonly=True)
    try:
        meta = _named(env, b"meta", path)
        log = _named(env, b"log", path)
        kvs = (_named(env, b"kv.0", path), _named(env, b"kv.1", path))
        with env.begin(buffers=False) as txn:
            cluster_id, applied = _check_node_db(txn, meta, path)
            raw_snap = txn.get(b"snapshot", db=meta)
            snap = _decode_snapshot(cast(bytes, raw_snap)) if raw_snap else SnapshotMeta(0, 0)
            active = kvs[1 if txn.get(b"kv_active", db=meta) == b"1" else 0]
            info = DbInfo(
                cluster_id, applied, snap, int(txn.stat(log)["entries"]), _latest_config(txn, log, snap.membership)
            )
            yield info, LmdbTables(txn, active)
    finally:
        env.close()


def _latest_config(txn: lmdb.Transaction, log: Any, base: Membership) -> Membership:
    cursor = txn.cursor(db=log)
    more = cursor.last()
    while more:
        entry = decode_entry(_INDEX.unpack(cursor.key())[0], cast(bytes, cursor.value()))
        if entry.kind == EntryKind.CONFIG:
            return Membership.decode(entry.data)
        more = cursor.prev()
    return base


def _rewrite(path: str, fd_out: int, cluster_id: str, membership: Membership) -> tuple[str, int]:
    """Rewrite the Raft metadata of the db at path (see the module
    docstring), then write a compact copy of it to fd_out. Returns (old
    cluster id, base index)."""
    env = _open_env(path, readonly=False)
    try:
        meta = _named(env, b"meta", path)
        log = _named(env, b"log", path)
        kvs = (_named(env, b"kv.0", path), _named(env, b"kv.1", path))
        with env.begin(write=True) as txn:
            old_cluster_id, applied = _check_node_db(txn, meta, path)
            index = max(applied, 1)
            staging = kvs[0 if txn.get(b"kv_active", db=meta) == b"1" else 1]
            txn.drop(staging, delete=False)
            txn.drop(log, delete=False)
            txn.delete(b"incoming", db=meta)
            # A new db: no log file record of the old one's may count for it
            # (opening gives it a new epoch).
            txn.delete(b"log_epoch", db=meta)
            txn.put(b"cluster_id", cluster_id.encode(), db=meta)
            txn.put(b"hard_state", _encode_hard_state(HardState(RESTORED_TERM, "", index)), db=meta)
            txn.put(b"snapshot", _encode_snapshot(SnapshotMeta(index, RESTORED_TERM, membership)), db=meta)
            txn.put(b"applied", _INDEX.pack(index), db=meta)
        env.copyfd(fd_out, compact=True)
    finally:
        env.close()
    os.fsync(fd_out)
    return old_cluster_id, index


def check_db_path_free(db_path: str) -> None:
    """StorageError unless db_path is absent or an empty file."""
    try:
        size = os.stat(db_path).st_size
    except FileNotFoundError:
        return
    except OSError as e:
        raise StorageError(f"cannot use db path {db_path}: {e.strerror or e}") from None
    if size > 0 or os.path.isdir(db_path):
        raise StorageError(f"db path {db_path} already holds data; restore makes a new db only (remove it first)")


def restore(snapshot: SnapshotFile, db_path: str, membership: Membership, cluster_id: str) -> Restored:
    """Create the db at db_path from the checked backup file snapshot, for a
    member of the new cluster of membership, cluster_id. Raises
    StorageError (nothing created) when db_path holds data or the file is
    not a node's db; SnapshotFileError if the file changed meanwhile."""
    check_db_path_free(db_path)
    directory = os.path.dirname(os.path.abspath(db_path))
    base = os.path.basename(db_path)
    temps: list[str] = []

    def temp() -> tuple[int, str]:
        fd, path = tempfile.mkstemp(dir=directory, prefix=f".{base}.restore-", suffix=".tmp")
        temps.append(path)
        return fd, path

    try:
        work_fd, work = temp()
        try:
            copy_db(snapshot, work_fd)
        finally:
            os.close(work_fd)
        out_fd, out = temp()
        try:
            old_cluster_id, index = _rewrite(work, out_fd, cluster_id, membership)
        finally:
            os.close(out_fd)
        _place(out, db_path)
        temps.remove(out)
        _fsync_dir(directory)
    finally:
        for path in temps:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return Restored(db_path, cluster_id, old_cluster_id, index, membership)


def _place(path: str, db_path: str) -> None:
    """Move the finished file to db_path, never over data."""
    try:
        os.link(path, db_path)
    except FileExistsError:
        check_db_path_free(db_path)  # an empty file is fine to replace
        os.replace(path, db_path)
        return
    os.unlink(path)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
