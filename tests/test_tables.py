"""The ordered-tables contract (``dkv.storage.tables``), checked against a
plain dict model with hypothesis, for every implementation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.storage.tables import MemoryTables

KEYS = st.binary(max_size=6) | st.binary(min_size=500, max_size=530)
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(["a", "b"]), KEYS, st.binary(max_size=4)),
    max_size=60,
)


def _model_scan(model: dict[bytes, bytes], start: bytes, end: bytes | None, reverse: bool) -> list[tuple[bytes, bytes]]:
    items = sorted((k, v) for k, v in model.items() if k >= start and (end is None or k < end))
    return items[::-1] if reverse else items


@settings(max_examples=200, deadline=None)
@given(ops=OPS, start=KEYS, end=st.none() | KEYS, reverse=st.booleans())
def test_memory_tables_match_a_sorted_dict(ops, start, end, reverse) -> None:
    tables = MemoryTables()
    models: dict[str, dict[bytes, bytes]] = {"a": {}, "b": {}}
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
        assert list(tables.scan(table, start, end, reverse=reverse)) == _model_scan(model, start, end, reverse)
    assert tables.get("c", b"x") is None and list(tables.scan("c")) == []
