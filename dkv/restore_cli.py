# test-case-name: tests.test_backup
"""``dkv restore``: make a backup the db of one member of a new cluster
(etcdutl's ``snapshot restore``).

    dkv restore FILE --node-id ID --cluster ID@HOST:PORT,... --db-path PATH
                [--initial-cluster-token TOKEN] [--skip-hash-check]

Run it once per member of the new cluster, with the same FILE, ``--cluster``
and token, then start each node on its ``--db-path`` (and the same
``--cluster``, which a db that holds data ignores). The checks come first and
nothing is created when one fails: FILE must end with the SHA-256 of the rest
(a corrupted or truncated file is refused; ``--skip-hash-check`` takes a raw
db copy), must be a dkv db, and PATH must not hold data. What is kept and
what is new: ``dkv.storage.restore``. One line on success; ``dkv restore:
reason`` and exit status 1 on failure (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import sys

from dkv.config import ConfigError, check_db_path, parse_cluster
from dkv.raft.membership import NODE_ID
from dkv.snapshot_status import status
from dkv.storage import StorageError, restore
from dkv.storage.snapshot_file import SnapshotFileError, check


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dkv restore",
        description="Create the db of a member of a new cluster from a backup (dkvctl or etcdctl snapshot save).",
    )
    p.add_argument("file", help="the backup: a db and its SHA-256, as Maintenance.Snapshot streams it")
    p.add_argument("--node-id", required=True, help="this member's id in --cluster")
    p.add_argument("--cluster", required=True, help="the new cluster, ID@HOST:RPC_PORT,... (all voters)")
    p.add_argument("--db-path", required=True, help="the db to create (absent or empty)")
    p.add_argument(
        "--initial-cluster-token", default="",
        help="mixed into the new cluster id; give the same on every member (default: none)",
    )  # fmt: skip
    p.add_argument(
        "--skip-hash-check", action="store_true",
        help="accept a file without its SHA-256 (a raw copy of a node's db)",
    )  # fmt: skip
    return p


def run(args: argparse.Namespace) -> str:
    """Restore as args say; the line to print. Raises ConfigError,
    SnapshotFileError or StorageError with the reason."""
    if not NODE_ID.match(args.node_id):
        raise ConfigError(f"node id {args.node_id!r} must be letters, digits, '_', '.', '-' (max 64)")
    cluster = parse_cluster(args.cluster)
    if all(m.id != args.node_id for m in cluster.members):
        raise ConfigError(f"node id {args.node_id!r} is not in --cluster {cluster}")
    check_db_path(args.db_path)
    restore.check_db_path_free(args.db_path)
    snapshot = check(args.file, args.skip_hash_check)
    held = status(args.file, args.skip_hash_check)
    cluster_id = restore.restored_cluster_id(cluster.membership, snapshot.sha256, args.initial_cluster_token)
    done = restore.restore(snapshot, args.db_path, cluster.membership, cluster_id)
    return (
        f"restored {args.file} into {done.db_path}: member {args.node_id} of new cluster {cluster_id} "
        f"({cluster}); revision {held.revision}, {held.total_keys} keys, {held.leases} leases; "
        f"the log starts after index {done.index} (backup of cluster {done.old_cluster_id})"
    )


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    try:
        line = run(args)
    except (ConfigError, SnapshotFileError, StorageError) as e:
        sys.exit(f"dkv restore: {e}")
    sys.stdout.write(line + "\n")
