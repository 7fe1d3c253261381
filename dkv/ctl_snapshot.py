# test-case-name: tests.test_backup
"""``dkvctl snapshot save FILE`` and ``dkvctl snapshot status FILE``.

``save`` asks the first endpoint that can be reached for a snapshot on the
JSON gateway (``POST /v3/maintenance/snapshot``, etcd's path: a stream of
``{"result": {"blob", "remaining_bytes"}}`` lines), the node's consistent
copy of its db followed by its SHA-256, taken while the cluster serves. The
blobs go to a temporary file beside FILE (``.FILE.*.part``), which becomes
FILE only once the stream ended with nothing remaining and the SHA-256 checks
out; a failure leaves FILE as it was and removes the temporary file. It
prints ``Snapshot saved at FILE`` (etcdctl's line), then the backup's
revision, size and SHA-256 (``--json``: the status as one object).

``status`` prints what a backup holds, as ``etcdctl snapshot status`` does
(``HASH, REVISION, TOTAL KEYS, TOTAL SIZE``; ``dkv.snapshot_status`` says
what each means for dkv).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import http.client
import json
import os
import tempfile
from typing import Any, TextIO

from dkv.ctl_etcd import human_bytes
from dkv.ctl_transport import REFUSED, UNREACHABLE, CtlError, stream
from dkv.snapshot_status import SnapshotStatus, status
from dkv.storage import StorageError
from dkv.storage.snapshot_file import SnapshotFileError, check


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("save", help="write a backup of an endpoint's db to FILE").add_argument("file")
    status_parser = actions.add_parser("status", help="what a backup FILE holds")
    status_parser.add_argument("file")
    status_parser.add_argument(
        "--skip-hash-check", action="store_true", help="accept a file without its SHA-256 (a raw db copy)"
    )


def _receive(args: argparse.Namespace, fd: int) -> str:
    """Stream the snapshot into fd; the endpoint that sent it."""
    with stream(
        args.endpoints, "POST", "/v3/maintenance/snapshot", {}, timeout=args.timeout, tls=getattr(args, "tls", None)
    ) as (endpoint, resp):
        remaining: int | None = None
        while True:
            try:
                line = resp.readline()
            except (OSError, http.client.HTTPException) as e:
                raise CtlError(f"snapshot from {endpoint} broke off: {e or type(e).__name__}", UNREACHABLE) from None
            if not line:
                break
            if not line.strip():
                continue
            remaining = _write_message(endpoint, line, fd)
    if remaining != 0:
        missing = "no data" if remaining is None else f"{remaining} bytes missing"
        raise CtlError(f"snapshot from {endpoint} ended early ({missing}); nothing was saved", UNREACHABLE)
    return endpoint


def _write_message(endpoint: str, line: bytes, fd: int) -> int:
    """Write one stream message's blob to fd; its remaining_bytes."""
    try:
        message = json.loads(line)
        if "error" in message:
            error = message["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            raise CtlError(f"{text}; nothing was saved", REFUSED)
        result: dict[str, Any] = message["result"]
        blob = base64.b64decode(result.get("blob", ""), validate=True)
        remaining = int(result.get("remaining_bytes", 0))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise CtlError(f"{endpoint} sent a snapshot message dkvctl cannot read; nothing was saved", REFUSED) from None
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view) :]
    return remaining


def save(args: argparse.Namespace, out: TextIO) -> None:
    path = args.file
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CtlError(f"{path} is a directory; give a file path", REFUSED)
    try:
        fd, part = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".part")
    except OSError as e:
        raise CtlError(f"cannot write {path}: {e.strerror or e}", REFUSED) from None
    try:
        try:
            _receive(args, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            checked = check(part)
        except SnapshotFileError:
            raise CtlError("the snapshot received fails its SHA-256 check; nothing was saved", UNREACHABLE) from None
        held: SnapshotStatus | None = None
        with contextlib.suppress(StorageError):  # etcd's snapshot: a bbolt file, no dkv status
            held = status(part)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    _fsync_dir(directory)
    if args.json:
        answer = held.as_json() if held is not None else {"totalSize": checked.db_bytes + 32, "sha256": checked.sha256}
        out.write(json.dumps({"path": path, **answer}) + "\n")
        return
    out.write(f"Snapshot saved at {path}\n")
    size = human_bytes(checked.db_bytes + 32)
    if held is not None:
        out.write(f"revision {held.revision}, {held.total_keys} keys, {size}, sha256 {checked.sha256}\n")
    else:
        out.write(f"{size}, sha256 {checked.sha256}\n")


def status_lines(held: SnapshotStatus) -> str:
    """etcdctl's simple format: hash (hex), revision, total keys, total size."""
    return f"{held.hash:x}, {held.revision}, {held.total_keys}, {human_bytes(held.total_size)}\n"


def run(args: argparse.Namespace, out: TextIO) -> None:
    if args.action == "save":
        save(args, out)
        return
    try:
        held = status(args.file, args.skip_hash_check)
    except (SnapshotFileError, StorageError) as e:
        raise CtlError(str(e), REFUSED) from None
    out.write(json.dumps(held.as_json()) + "\n" if args.json else status_lines(held))


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
