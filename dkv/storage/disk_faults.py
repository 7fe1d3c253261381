# test-case-name: tests.test_disk_faults
"""A disk that fails: what the store makes of it, and the hook tests use to
make it happen.

A commit that fails with EIO (the write or its fsync) may have lost data
the page cache held: retrying the fsync could report success for pages the
kernel already dropped. So the store never retries it: it raises
``DiskFailed``, refuses every later write, and the node stops at once with
one line (``DiskFailed.line``); a restart recovers from what is durable
(LMDB's last committed transaction).

Test-only fault injection: ``LmdbStore.fault_hook`` is called on the writer
thread just before each commit of a write batch, and before each append to
the log file (``dkv.storage.log_file``: "commit" below means both); tests set it directly, or
a node process installs one from its environment (``install_from_environ``)
only when ``DKV_TESTING_ONLY_FAULTS=1`` is set beside
``DKV_TEST_DISK_FAULTS``, a comma-separated list of:

``eio-when=PATH``     every commit fails with EIO once PATH exists;
``enospc-when=PATH``  every commit fails with ENOSPC (the disk is full)
                      while PATH exists;
``commit-delay=SEC``  every commit first waits SEC seconds (a slow disk);
``slow-when=PATH``    ... only once PATH exists.

Never set these in production.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from dkv.logs import logger
from dkv.storage import StorageError

log = logger("dkv.storage")

#: Must be "1" for ``DKV_TEST_DISK_FAULTS`` to be honoured.
ENABLE_VARIABLE = "DKV_TESTING_ONLY_FAULTS"
SPEC_VARIABLE = "DKV_TEST_DISK_FAULTS"

FaultHook = Callable[[], None]


class DiskFailed(StorageError):
    """A write to the db failed at the disk (EIO): the node must stop."""

    def __init__(self, path: str, cause: BaseException) -> None:
        self.path = path
        self.cause = cause
        super().__init__(
            f"disk failure: committing to db {path} failed ({cause}); this node stopped to protect its data "
            "(a failed fsync is never retried). Restart it to recover from what is on disk; if the disk "
            "keeps failing, see 'Disk failures' in the README"
        )

    @property
    def line(self) -> str:
        """The one line the operator sees."""
        return str(self)


def is_io_error(error: BaseException) -> bool:
    """Whether error is the disk reporting EIO (an ``OSError`` or an
    ``lmdb.Error``, whose ``code`` is the errno)."""
    return getattr(error, "errno", None) == errno.EIO or getattr(error, "code", None) == errno.EIO


def eio(what: str = "fsync") -> OSError:
    """The error a failing disk gives."""
    return OSError(errno.EIO, os.strerror(errno.EIO), what)


class _HasHook(Protocol):
    fault_hook: FaultHook | None


def enospc(what: str = "write") -> OSError:
    """The error a full disk gives."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what)


def hook_from_spec(spec: str, sleep: Callable[[float], None] = time.sleep) -> FaultHook:
    """The fault hook that ``DKV_TEST_DISK_FAULTS`` spec describes; raises
    ValueError for a spec it does not understand."""
    trigger: str | None = None
    slow_trigger: str | None = None
    full_trigger: str | None = None
    delay = 0.0
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name == "eio-when" and value:
            trigger = value
        elif name == "commit-delay":
            delay = float(value)
        elif name == "slow-when" and value:
            slow_trigger = value
        elif name == "enospc-when" and value:
            full_trigger = value
        else:
            raise ValueError(
                f"unknown disk fault {part!r} (expected eio-when=PATH, enospc-when=PATH, commit-delay=SECONDS "
                "or slow-when=PATH)"
            )

    def hook() -> None:
        if delay and (slow_trigger is None or os.path.exists(slow_trigger)):
            sleep(delay)
        if trigger is not None and os.path.exists(trigger):
            raise eio(f"injected by {SPEC_VARIABLE}")
        if full_trigger is not None and os.path.exists(full_trigger):
            raise enospc(f"injected by {SPEC_VARIABLE}")

    return hook


def install_from_environ(store: _HasHook, environ: Mapping[str, str] = os.environ) -> None:
    """Set store's fault hook from ``DKV_TEST_DISK_FAULTS``, only when
    ``DKV_TESTING_ONLY_FAULTS=1`` (tests only)."""
    spec = environ.get(SPEC_VARIABLE)
    if not spec or environ.get(ENABLE_VARIABLE) != "1":
        return
    store.fault_hook = hook_from_spec(spec)
    log.warn("TEST ONLY: disk faults injected: {spec}", spec=spec)
