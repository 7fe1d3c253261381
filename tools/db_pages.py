"""Where a node's db file's pages go (an operator's tool, not a test).

    python tools/db_pages.py DATA_DIR_OR_DB_FILE... [--json]

For each db (a ``*.db`` file, or every ``*.db`` file in a directory) prints
the file's size, LMDB's page accounting (pages to the high-water mark, used,
free for reuse), each named database's entries and branch / leaf / overflow
pages, the state's tables (records and bytes per table) and the read
transactions open on it (``dkv.storage.pages``). It opens the db read-only
and reads it in short transactions, so it is safe on a running node's db.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import attrs

from dkv.storage.pages import measure, render


def db_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        found.extend(sorted(p.glob("*.db")) if p.is_dir() else [p])
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="db files, or directories holding them")
    parser.add_argument("--json", action="store_true", help="one JSON object per db, a line each")
    args = parser.parse_args(argv)
    files = db_files(args.paths)
    if not files:
        print("no db files found", file=sys.stderr)
        return 1
    for i, path in enumerate(files):
        pages = measure(str(path))
        if args.json:
            print(json.dumps({**attrs.asdict(pages), "used": pages.used, "free": pages.free}))
        else:
            print(("\n" if i else "") + render(pages))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
