# test-case-name: tests.test_disk_full
"""Telling a full disk from other storage failures.

LMDB reports ENOSPC as ``lmdb.DiskError`` and a full map as
``lmdb.MapFullError``; the file system reports it as ``OSError`` ENOSPC.
None of these is a bug, so the node says so in one line (no traceback):
at start-up as a ``StartupError``; at a write the driver holds its writes,
retries them and raises the NOSPACE alarm (``ReplicationService._stall``).
The space quota (``dkv.quota``) is what keeps a node from getting there.
"""

from __future__ import annotations

import errno

import lmdb

#: What the operator can do, appended to the one line.
HINT = (
    "free space on the db's file system (or move the db to a larger one) and restart; "
    "--quota-backend-bytes keeps the db below the space it may use"
)


def is_disk_full(error: BaseException) -> bool:
    """Whether error says the disk (or LMDB's map) is full."""
    if isinstance(error, (lmdb.DiskError, lmdb.MapFullError)):
        return True
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_line(path: str, error: BaseException) -> str:
    """The one line that says so."""
    return f"db path {path}: the disk is full ({error}); {HINT}"
