"""``tools/db_pages.py`` and ``dkv.storage.pages``: a db's page accounting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest_twisted

from dkv.storage.pages import measure, parse_readers, render
from tests.test_db_growth import Rounds
from tests.test_storage import open_lmdb

TOOL = Path(__file__).resolve().parent.parent / "tools" / "db_pages.py"


def test_reader_table_rows_are_parsed() -> None:
    text = "    pid     thread     txnid\n   4242 7f00aa00bb00       311\n   4243 7f00aa00bb01 -\n"
    readers = parse_readers(text)
    assert [(r.pid, r.txnid) for r in readers] == [(4242, 311)]


@pytest_twisted.ensureDeferred
async def test_the_accounting_adds_up_and_the_tool_prints_it(tmp_path) -> None:
    path = tmp_path / "n.db"
    store = open_lmdb(str(path))
    try:
        await Rounds(store).run(3)
        # Another process may read it while the store is open (read-only).
        done = subprocess.run(
            [sys.executable, str(TOOL), str(tmp_path), "--json"], capture_output=True, text=True, timeout=60, check=True
        )
    finally:
        await store.close()
    pages = measure(str(path))
    assert pages.file_bytes == path.stat().st_size
    assert pages.high_water * pages.page_size <= pages.file_bytes
    assert pages.used + pages.free == pages.high_water
    trees = {t.name: t for t in pages.trees}
    assert {"kv.0", "kv.1", "log", "meta"} <= set(trees)
    tables = {name: n for name, n, _ in pages.tables}
    assert tables["mvcc.history"] == tables["mvcc.index"] > 0
    assert trees["kv.0"].entries == sum(n for _, n, _ in pages.tables)
    text = render(pages)
    assert "mvcc.history" in text and "readers: none" in text
    row = json.loads(done.stdout)
    assert (row["path"], row["used"], row["free"]) == (str(path), pages.used, pages.free)
