# test-case-name: tests.test_backup
"""A backup file as ``Maintenance.Snapshot`` streams it: a consistent, compact
copy of a node's LMDB db followed by the SHA-256 of that copy (32 bytes), as
etcd's snapshot ends with the SHA-256 of its bbolt file.

``check`` reads a file and says whether it is whole: the last 32 bytes must
be the SHA-256 of everything before them, so a flipped byte or a file cut
short anywhere is refused. A raw db copy (no trailer: a db file copied by
hand) is taken only when the caller skips the check, as ``etcdutl snapshot
restore --skip-hash-check`` does. ``copy_db`` copies the db part of a checked
file and hashes it again on the way (the file may have changed since).

Plain file I/O, no reactor: the callers are command-line tools.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

import attrs

#: Bytes of the SHA-256 trailer.
TRAILER = hashlib.sha256().digest_size
#: Bytes read at a time.
CHUNK = 1 << 20


class SnapshotFileError(Exception):
    """The file cannot be used; the message says why, in one line."""


@attrs.frozen
class SnapshotFile:
    """A checked backup file: ``db_bytes`` of db, then (``has_trailer``) its
    SHA-256; ``sha256`` is the hash of the db bytes (hex)."""

    path: str
    db_bytes: int
    sha256: str
    has_trailer: bool


def _hash_prefix(f: BinaryIO, size: int, path: str) -> bytes:
    digest = hashlib.sha256()
    left = size
    while left > 0:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise SnapshotFileError(f"snapshot {path} changed while it was read (it is shorter now)")
        digest.update(chunk)
        left -= len(chunk)
    return digest.digest()


def check(path: str, skip_hash_check: bool = False) -> SnapshotFile:
    """The file at path, checked. Raises SnapshotFileError when it cannot be
    read, is empty, or (unless skip_hash_check) does not end with the
    SHA-256 of the rest: corrupted or truncated. With skip_hash_check the
    whole file is the db (a raw copy) unless its last 32 bytes are the
    hash of the rest, which is then dropped."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise SnapshotFileError(f"snapshot {path} is empty")
            if size <= TRAILER:
                if skip_hash_check:
                    return SnapshotFile(path, size, _hash_prefix(f, size, path).hex(), False)
                raise SnapshotFileError(
                    f"snapshot {path} is truncated: {size} bytes, too short to hold a db and its SHA-256"
                )
            digest = _hash_prefix(f, size - TRAILER, path)
            trailer = f.read(TRAILER)
    except OSError as e:
        raise SnapshotFileError(f"cannot read snapshot {path}: {e.strerror or e}") from None
    if trailer == digest:
        return SnapshotFile(path, size - TRAILER, digest.hex(), True)
    if skip_hash_check:
        with open(path, "rb") as f:
            whole = _hash_prefix(f, size, path)
        return SnapshotFile(path, size, whole.hex(), False)
    raise SnapshotFileError(
        f"snapshot {path} failed its integrity check: its last 32 bytes are not the SHA-256 of the rest "
        "(corrupted or truncated; a raw db copy without the hash needs --skip-hash-check)"
    )


def append_trailer(fd: int) -> str:
    """Make the db written to fd a backup file: append the SHA-256 of
    everything in fd from its start (the hex digest is returned)."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
    trailer = digest.digest()
    view = memoryview(trailer)
    while view:
        view = view[os.write(fd, view) :]
    return trailer.hex()


def copy_db(snapshot: SnapshotFile, fd: int) -> None:
    """Write the db part of snapshot to fd (from its current offset) and
    fsync it. Raises SnapshotFileError if the file no longer matches what
    ``check`` saw."""
    digest = hashlib.sha256()
    try:
        with open(snapshot.path, "rb") as f:
            left = snapshot.db_bytes
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise SnapshotFileError(f"snapshot {snapshot.path} changed while it was read (it is shorter now)")
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                left -= len(chunk)
    except OSError as e:
        raise SnapshotFileError(f"cannot copy snapshot {snapshot.path}: {e.strerror or e}") from None
    if digest.hexdigest() != snapshot.sha256:
        raise SnapshotFileError(f"snapshot {snapshot.path} changed while it was read")
    os.fsync(fd)
