# test-case-name: tests.test_db_pages,tests.test_db_growth
"""Where a node's db file's pages go: per named database (entries, depth,
branch / leaf / overflow pages), the pages free for reuse, and the readers
that pin old pages.

LMDB never shrinks its file; it reuses the pages a commit freed, but only
once no read transaction can still see them: a reader that stays open holds
every page freed after its snapshot, and the file grows while it lives. This
module reads those figures from a db (``tools/db_pages.py`` prints them; it
opens the db read-only, so it works on a running node's db too).

``free`` is the file's pages less the meta pages and the pages every tree
holds (py-lmdb does not expose LMDB's free-list database): the pages free
for reuse, plus the free list's own pages, plus the pages that wait for a
reader to end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs
import lmdb

from dkv.storage.lmdb_tables import TABLE_IDS

#: The per-database figures of ``txn.stat(db)``.
_FIELDS = ("entries", "depth", "branch_pages", "leaf_pages", "overflow_pages")


@attrs.frozen
class TreeStat:
    """One database's B+tree: its entries and pages."""

    name: str
    entries: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int

    @property
    def pages(self) -> int:
        return self.branch_pages + self.leaf_pages + self.overflow_pages


@attrs.frozen
class Reader:
    """One slot of LMDB's reader table: a live read transaction."""

    pid: int
    thread: str
    txnid: int


@attrs.frozen
class DbPages:
    """The page accounting of one db file."""

    path: str
    file_bytes: int
    page_size: int
    #: Pages in use up to the file's high-water mark (``last_pgno + 1``).
    high_water: int
    last_txnid: int
    trees: tuple[TreeStat, ...]
    readers: tuple[Reader, ...]
    #: The state's tables (``dkv.storage.lmdb_tables``): name -> (records, bytes of keys and values).
    tables: tuple[tuple[str, int, int], ...] = ()

    @property
    def used(self) -> int:
        """Pages the trees hold, with the two meta pages."""
        return 2 + sum(t.pages for t in self.trees)

    @property
    def free(self) -> int:
        """Pages below the high-water mark that no tree holds."""
        return max(self.high_water - self.used, 0)

    @property
    def oldest_reader_lag(self) -> int | None:
        """How many transactions the oldest reader is behind (None: no reader)."""
        if not self.readers:
            return None
        return self.last_txnid - min(r.txnid for r in self.readers)


def _tree(name: str, stat: Mapping[str, Any]) -> TreeStat:
    return TreeStat(name, *(int(stat[f]) for f in _FIELDS))


def parse_readers(text: str) -> tuple[Reader, ...]:
    """The rows of ``env.readers()`` (a table: ``pid thread txnid``; a free
    slot shows txnid ``-``)."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        rows.append(Reader(int(parts[0]), parts[1], int(parts[2])))
    return tuple(rows)


def table_sizes(txn: lmdb.Transaction, db: Any) -> tuple[tuple[str, int, int], ...]:
    """(table, records, bytes) of every table in the state database db."""
    names = {prefix: name for name, prefix in TABLE_IDS.items()}
    counts: dict[int, list[int]] = {}
    for key, value in txn.cursor(db=db).iternext(keys=True, values=True):
        row = counts.setdefault(key[0], [0, 0])
        row[0] += 1
        row[1] += len(key) + len(value)
    return tuple((names.get(p, f"prefix {p}"), n, size) for p, (n, size) in sorted(counts.items()))


def measure_env(env: lmdb.Environment) -> DbPages:
    """The accounting of an open environment (short read transactions)."""
    info = env.info()
    main = env.stat()
    trees = [_tree("(main)", main)]
    with env.begin(buffers=False) as txn:
        names = [k for k, _ in txn.cursor().iternext(keys=True, values=True)]
    dbs = {}
    for name in names:
        try:
            dbs[name] = env.open_db(name, create=False)
        except lmdb.Error:
            continue  # a plain key of the main database, not a named one
    tables: tuple[tuple[str, int, int], ...] = ()
    with env.begin(buffers=False) as txn:
        state = b"kv.1" if b"meta" in dbs and txn.get(b"kv_active", db=dbs[b"meta"]) == b"1" else b"kv.0"
        for name, db in dbs.items():
            trees.append(_tree(name.decode(errors="replace"), txn.stat(db)))
            if name == state:
                tables = table_sizes(txn, db)
    path = env.path()
    return DbPages(
        path=path,
        file_bytes=os.path.getsize(path),
        page_size=int(main["psize"]),
        high_water=int(info["last_pgno"]) + 1,
        last_txnid=int(info["last_txnid"]),
        trees=tuple(trees),
        readers=parse_readers(env.readers()),
        tables=tables,
    )


def measure(path: str) -> DbPages:
    """Open the db file at path read-only (a running node's too) and measure it."""
    env = lmdb.open(path, subdir=False, readonly=True, lock=True, max_dbs=16, readahead=False)
    try:
        return measure_env(env)
    finally:
        env.close()


def render(p: DbPages) -> str:
    """A human-readable table of p."""
    mib = 1 << 20
    lines = [
        f"{p.path}: {p.file_bytes / mib:.2f} MiB file, page {p.page_size} B",
        f"pages: {p.high_water} to the high-water mark, {p.used} used, {p.free} free "
        f"({p.free * p.page_size / mib:.2f} MiB), last txn {p.last_txnid}",
        f"{'database':<10} {'entries':>10} {'depth':>5} {'branch':>8} {'leaf':>8} {'overflow':>8} {'MiB':>8}",
    ]
    for t in p.trees:
        lines.append(
            f"{t.name:<10} {t.entries:>10} {t.depth:>5} {t.branch_pages:>8} {t.leaf_pages:>8} "
            f"{t.overflow_pages:>8} {t.pages * p.page_size / mib:>8.2f}"
        )
    if p.tables:
        lines.append("state tables: " + ", ".join(f"{name} {n} ({size / mib:.2f} MiB)" for name, n, size in p.tables))
    if p.readers:
        lines.append(f"readers: {len(p.readers)}, the oldest {p.oldest_reader_lag} transactions behind")
        lines.extend(f"  pid {r.pid} thread {r.thread} txn {r.txnid}" for r in p.readers)
    else:
        lines.append("readers: none")
    return "\n".join(lines)
