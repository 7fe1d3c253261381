"""dkv.client's KV, transaction and cluster calls against a real single-node
dkv stack (LMDB, Raft, the JSON gateway on the REST port), in process."""

from __future__ import annotations

import pytest
import pytest_twisted

from dkv.client import Client, Compacted, DkvClientError, txn
from tests.conftest import Stack


def client(stack: Stack) -> Client:
    from twisted.internet import reactor

    return Client([stack.rest_url], reactor=reactor)


@pytest_twisted.ensureDeferred
async def test_put_get_range_and_delete(stack: Stack) -> None:
    c = client(stack)
    first = await c.put(b"foo", b"bar")
    assert first.header.revision == 2 and first.prev_kv is None
    again = await c.put(b"foo", b"baz", prev_kv=True)
    assert again.prev_kv is not None and (again.prev_kv.value, again.prev_kv.mod_revision) == (b"bar", 2)
    await c.put(b"foo1", b"x")
    await c.put(b"zoo", b"\x00\xff")
    kv = await c.get(b"foo")
    assert kv is not None and (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"foo", b"baz", 2, 3, 2
    )  # fmt: skip
    assert await c.get(b"nothing") is None
    old = await c.get(b"foo", revision=2)
    assert old is not None and old.value == b"bar"
    rows = await c.prefix(b"foo")
    assert [(kv.key, kv.value) for kv in rows.kvs] == [(b"foo", b"baz"), (b"foo1", b"x")] and rows.count == 2
    assert (await c.range(b"a", from_key=True, count_only=True)).count == 3
    newest = await c.range(b"", from_key=True, sort_target="MOD", sort_order="DESCEND", limit=1)
    assert [kv.key for kv in newest.kvs] == [b"zoo"] and newest.more
    assert (await c.get(b"zoo")).value == b"\x00\xff"  # type: ignore[union-attr]
    oldest = await c.range(b"", from_key=True, max_create_revision=3, sort_target="CREATE", sort_order="DESCEND")
    assert [kv.key for kv in oldest.kvs] == [b"foo"]
    gone = await c.delete(b"foo", prefix=True, prev_kv=True)
    assert gone.deleted == 2 and [kv.key for kv in gone.prev_kvs] == [b"foo", b"foo1"]
    assert (await c.delete(b"foo")).deleted == 0
    await c.close()


@pytest_twisted.ensureDeferred
async def test_transactions(stack: Stack) -> None:
    c = client(stack)
    await c.put(b"k", b"v")
    swap = txn.Txn().when(txn.value(b"k") == b"v").then(txn.put(b"k", b"w"), txn.get(b"k")).otherwise(txn.get(b"k"))
    done = await c.txn(swap)
    assert done.succeeded and done.responses[1].kvs[0].value == b"w"  # type: ignore[union-attr]
    failed = await c.txn(swap)
    assert not failed.succeeded and failed.responses[0].kvs[0].value == b"w"  # type: ignore[union-attr]
    create = txn.Txn().when(txn.create_revision(b"new") == 0).then(txn.put(b"new", b"1"))
    assert (await c.txn(create)).succeeded and not (await c.txn(create)).succeeded
    await c.close()


@pytest_twisted.ensureDeferred
async def test_compaction_members_and_status(stack: Stack) -> None:
    c = client(stack)
    for value in (b"1", b"2", b"3"):
        await c.put(b"k", value)  # revisions 2, 3, 4
    await c.compact(3)
    with pytest.raises(Compacted):
        await c.get(b"k", revision=2)
    with pytest.raises(DkvClientError, match="future revision"):
        await c.get(b"k", revision=99)
    members = await c.members()
    assert len(members) == 1 and members[0].id != 0
    status = await c.status()
    assert status.leader == members[0].id == status.header.member_id and status.raft_term >= 1
    await c.close()
