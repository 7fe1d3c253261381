# test-case-name: tests.test_log_file
"""``LogFile``: the Raft log's write-ahead file beside the LMDB db.

Making a Ready's entries and hard state durable is the one write a Raft
round waits for, on every member. An LMDB transaction does it with two
fsyncs and a rewrite of every page on the path to each changed record
(about ten page writes for one entry); this file does it with one
``pwrite`` and one ``fdatasync``. ``LmdbStore`` appends the log-only write
batches here and gives LMDB their entries and hard state later, in order,
in the next transaction it makes for another reason (applied writes, a
compaction, a snapshot; see ``dkv.replication.held_apply``): that
transaction also changes the db's *epoch* (a random 64-bit number in LMDB's
``meta``), and the file starts again from its beginning under the new one.

The file is preallocated (``posix_fallocate``) so that an append never
needs a block or changes the file's size: ``fdatasync`` then writes the
record's pages and nothing else, and a full file system never refuses an
append. It holds records, from offset 0::

    length (4 bytes) | CRC-32 of the rest (4) | epoch (8) | payload (length bytes)
    payload: hard state length (4; 0 for none) | hard state | entries,
             each: index (8) | length (4) | entry (LmdbStore's log encoding)

all big-endian. The records that count are those from offset 0 on whose
epoch is the db's and whose CRC holds, up to the first that is not: an
append that a crash cut short fails its CRC (each record is durable before
the next is written, so nothing of the epoch follows it), and the records
of earlier epochs, left behind the current ones, are already in LMDB. A
file left by another db (a db file replaced or restored at the same path)
has another epoch and counts for nothing.

Not thread-safe: the store uses it from its writer thread only (and at
start-up, before the writer runs).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable

__all__ = ["DEFAULT_LOG_FILE_BYTES", "LogFile", "LogFileFull", "LogRecord", "log_file_path"]

#: The file's size: at one record per Raft round, many seconds of writes
#: between two LMDB transactions (which come every 100 ms at most).
DEFAULT_LOG_FILE_BYTES = 16 << 20

_HEAD = struct.Struct(">IIQ")
_EPOCH = struct.Struct(">Q")
_LEN = struct.Struct(">I")
_ENTRY = struct.Struct(">QI")

#: One record as the store gave it: the encoded hard state (None: none) and
#: the encoded entries as (index, bytes).
LogRecord = tuple["bytes | None", "list[tuple[int, bytes]]"]


class LogFileFull(Exception):
    """The record does not fit in what is left of the file: the store must
    make an LMDB transaction (which empties the file) instead."""


def log_file_path(db_path: str) -> str:
    """Where the log file of the db at db_path lives (beside it)."""
    return db_path + "-wal"


class LogFile:
    """One preallocated file of log records (see the module docstring)."""

    def __init__(self, path: str, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size
        #: The epoch the next append is written under.
        self.epoch = 0
        #: Where the next append goes.
        self.offset = 0

    @classmethod
    def open(cls, path: str, size: int = DEFAULT_LOG_FILE_BYTES) -> LogFile:
        """Open (creating and preallocating if needed) the file at path, at
        least size bytes. Raises OSError when that is impossible (no room
        for it, say); a file it created is removed again then."""
        created = not os.path.exists(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            have = os.fstat(fd).st_size
            if have < size:
                os.posix_fallocate(fd, 0, size)
                os.fsync(fd)
            if created:
                _sync_directory(path)
            return cls(path, fd, max(have, size))
        except BaseException:
            os.close(fd)
            if created:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise

    def records(self, epoch: int) -> list[LogRecord]:
        """The records of epoch, in order (see the module docstring); the
        next append goes after them, under epoch."""
        out: list[LogRecord] = []
        offset = 0
        while offset + _HEAD.size <= self.size:
            head = os.pread(self._fd, _HEAD.size, offset)
            if len(head) < _HEAD.size:
                break
            length, crc, got_epoch = _HEAD.unpack(head)
            end = offset + _HEAD.size + length
            if got_epoch != epoch or length == 0 or end > self.size:
                break
            payload = os.pread(self._fd, length, offset + _HEAD.size)
            if len(payload) < length or zlib.crc32(payload, zlib.crc32(head[8:])) != crc:
                break
            record = _decode(payload)
            if record is None:
                break
            out.append(record)
            offset = end
        self.epoch, self.offset = epoch, offset
        return out

    def append(self, record: LogRecord, before_sync: Callable[[], None] | None = None) -> None:
        """Write record after the last and make it durable.
        Raises LogFileFull when it does not fit, and what the disk raises
        (the record then does not count: the next append overwrites it);
        before_sync (the store's fault hook, for tests) is called first."""
        hard_state, entries = record
        parts = [_LEN.pack(len(hard_state or b"")), hard_state or b""]
        for index, raw in entries:
            parts.append(_ENTRY.pack(index, len(raw)))
            parts.append(raw)
        payload = b"".join(parts)
        epoch = _EPOCH.pack(self.epoch)
        data = _HEAD.pack(len(payload), zlib.crc32(payload, zlib.crc32(epoch)), self.epoch) + payload
        if self.offset + len(data) > self.size:
            raise LogFileFull(f"{len(data)} bytes do not fit at {self.offset} of {self.size}")
        if before_sync is not None:
            before_sync()
        written = os.pwrite(self._fd, data, self.offset)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {self.path}: {written} of {len(data)} bytes")
        os.fdatasync(self._fd)
        self.offset += len(data)

    def restart(self, epoch: int) -> None:
        """Everything written is in LMDB now, whose epoch is epoch: append
        from the beginning again, under it."""
        self.epoch, self.offset = epoch, 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _decode(payload: bytes) -> LogRecord | None:
    """A record's payload, or None if it does not parse (then it ends the
    records, as a failed CRC does)."""
    try:
        (hs_len,) = _LEN.unpack_from(payload)
        at = _LEN.size + hs_len
        if at > len(payload):
            return None
        hard_state = payload[_LEN.size : at] if hs_len else None
        entries = []
        while at < len(payload):
            index, length = _ENTRY.unpack_from(payload, at)
            at += _ENTRY.size
            if at + length > len(payload):
                return None
            entries.append((index, payload[at : at + length]))
            at += length
        return hard_state, entries
    except struct.error:
        return None


def _sync_directory(path: str) -> None:
    """Make path's directory entry durable (a created file's name)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
