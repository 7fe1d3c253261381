"""The ordered-tables contract (``dkv.storage.tables``), checked against a
plain dict model with hypothesis, for every implementation: in memory, and
in LMDB (with keys longer than LMDB's limit, sharing long prefixes)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.storage.lmdb_tables import SHORT, LmdbTables
from dkv.storage.tables import MemoryTables

TABLES = ["mvcc.live", "mvcc.index"]
_LONG_PREFIX = b"\x07" * SHORT
KEYS = (
    st.binary(max_size=6)
    | st.binary(min_size=500, max_size=530)
    # keys around the long-key boundary that share their first SHORT bytes
    | st.binary(max_size=3).map(lambda tail: _LONG_PREFIX + tail)
    | st.binary(max_size=3).map(lambda tail: _LONG_PREFIX[:-1] + tail)
)
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(TABLES), KEYS, st.binary(max_size=4)),
    max_size=60,
)


@contextlib.contextmanager
def memory() -> Iterator[MemoryTables]:
    yield MemoryTables()


@contextlib.contextmanager
def in_lmdb() -> Iterator[LmdbTables]:
    with tempfile.TemporaryDirectory() as tmp:
        env = lmdb.open(f"{tmp}/t.db", subdir=False, max_dbs=2, map_size=1 << 26)
        try:
            db = env.open_db(b"state")
            with env.begin(write=True) as txn:
                yield LmdbTables(txn, db)
        finally:
            env.close()


def _model_scan(model: dict[bytes, bytes], start: bytes, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes]]:
    items = sorted((k, v) for k, v in model.items() if k >= start and (end is None or k < end))
    return items[::-1] if reverse else items


def _check(make, ops, start, end, reverse) -> None:
    models: dict[str, dict[bytes, bytes]] = {t: {} for t in TABLES}
    with make() as tables:
        for op, table, key, value in ops:
            if op == "put":
                tables.put(table, key, value)
                models[table][key] = value
            else:
                tables.delete(table, key)
                models[table].pop(key, None)
        for table, model in models.items():
            for key in model:
                assert tables.get(table, key) == model[key]
            assert tables.get(table, start) == model.get(start)
            assert list(tables.scan(table, start, end, reverse=reverse)) == _model_scan(model, start, end, reverse)
        assert list(tables.scan("mvcc.meta")) == []


# (One test per implementation: pytest-twisted's hook trips over hypothesis
# combined with parametrize.)
@settings(max_examples=150, deadline=None)
@given(ops=OPS, start=KEYS, end=st.none() | KEYS, reverse=st.booleans())
def test_memory_tables_match_a_sorted_dict(ops, start, end, reverse) -> None:
    _check(memory, ops, start, end, reverse)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, start=KEYS, end=st.none() | KEYS, reverse=st.booleans())
def test_lmdb_tables_match_a_sorted_dict(ops, start, end, reverse) -> None:
    _check(in_lmdb, ops, start, end, reverse)


def test_an_unknown_table_is_refused() -> None:
    from dkv.storage.lmdb_tables import UnknownTable

    with in_lmdb() as tables, pytest.raises(UnknownTable):
        tables.put("nope", b"k", b"v")
