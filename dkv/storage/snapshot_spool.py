# test-case-name: tests.test_db_growth,tests.test_storage
"""A snapshot's records copied out of the db into an unlinked temporary file,
cut into chunks, so the read transaction that saw them can end.

An LMDB read transaction keeps every page freed after its snapshot from
being reused: while it lives, each commit appends new pages and the db file
grows by what was written meanwhile (LMDB never gives pages back to the
file system). A snapshot transfer runs at the follower's pace and a failed
one is kept a minute for resuming (``dkv.replication.snapshot_shipping``),
so a transaction held for the whole transfer made the file grow with the
write load during it. Spooling bounds the transaction's life to one
sequential pass over the state, whatever the transfer does after.

The file holds ``key length (u32), value length (u32), key, value`` per
record; the chunk starts are kept, so any chunk can be read again (a
transfer resuming). ``chunk_bytes`` cuts as ``LmdbSnapshotReader`` does: a
chunk takes records until it holds at least that many bytes (key, value and
16 bytes each).
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable
from typing import IO

_FRAME = struct.Struct(">II")
#: What a record counts for when cutting chunks, beyond its key and value.
RECORD_OVERHEAD = 16


class SpooledChunks:
    """Chunks of records in a temporary file; ``close()`` frees it."""

    def __init__(self, file: IO[bytes], starts: list[int]) -> None:
        self._file = file
        #: Offsets of each chunk's first record, and of the file's end.
        self._starts = starts

    @classmethod
    def write(cls, records: Iterable[tuple[bytes, bytes]], chunk_bytes: int, directory: str) -> SpooledChunks:
        """Copy records (in order) into a new unlinked file in directory.
        Raises OSError (the file is gone then) when it cannot be written."""
        file = tempfile.TemporaryFile(dir=directory, prefix="dkv-snapshot-")
        try:
            starts = [0]
            offset = size = 0
            for key, value in records:
                if size >= chunk_bytes:
                    starts.append(offset)
                    size = 0
                file.write(_FRAME.pack(len(key), len(value)))
                file.write(key)
                file.write(value)
                offset += _FRAME.size + len(key) + len(value)
                size += len(key) + len(value) + RECORD_OVERHEAD
            starts.append(offset)
            file.flush()
        except BaseException:
            file.close()
            raise
        return cls(file, starts)

    @property
    def chunks(self) -> int:
        return len(self._starts) - 1

    def read(self, seq: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The records of chunk seq and whether it is the last."""
        if not 0 <= seq < self.chunks:
            raise ValueError(f"chunk {seq} does not exist: the snapshot has {self.chunks}")
        start, end = self._starts[seq], self._starts[seq + 1]
        self._file.seek(start)
        data = self._file.read(end - start)
        records: list[tuple[bytes, bytes]] = []
        at = 0
        while at < len(data):
            klen, vlen = _FRAME.unpack_from(data, at)
            at += _FRAME.size
            records.append((data[at : at + klen], data[at + klen : at + klen + vlen]))
            at += klen + vlen
        return records, seq + 1 == self.chunks

    def close(self) -> None:
        self._file.close()
