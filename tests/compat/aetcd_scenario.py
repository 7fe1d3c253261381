"""What test_aetcd does through aetcd, in a process of its own:

    python -m tests.compat.aetcd_scenario HOST:PORT

runs the operations below against the gRPC services at HOST:PORT (a fresh
cluster: the first write is revision 2) and prints what it observed as one
JSON object; test_aetcd checks it.

A process of its own because aetcd's generated protobuf modules and dkv's
(``dkv.pb.etcd_*``) define the same full names (``etcdserverpb.RangeRequest``
...) from different files, and protobuf's default descriptor pool refuses
the second ("duplicate symbol"): they cannot be imported into one
interpreter. So this module imports nothing from dkv.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aetcd
from aetcd import rpc


def kv(item: Any) -> list[Any]:
    return [item.key.decode(), item.value.decode(), item.create_revision, item.mod_revision, item.version]


async def scenario(host: str, port: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=port, timeout=10) as client:
        t = client.transactions
        seen["put"] = (await client.put(b"foo", b"bar")).header.revision  # 2
        for key, value in ((b"foo1", b"bar1"), (b"foo2", b"bar2"), (b"zoo", b"z")):  # 3, 4, 5
            await client.put(key, value)
        replaced = await client.put(b"foo", b"baz", prev_kv=True)  # 6
        seen["put_prev_kv"] = kv(replaced.prev_kv)
        got = await client.get(b"foo")
        seen["get"] = [*kv(got), got.header.revision]
        seen["get_missing"] = await client.get(b"nothing-here")
        prefix = await client.get_prefix(b"foo")
        seen["prefix"] = {"kvs": [kv(item) for item in prefix], "count": prefix.count, "more": prefix.more}
        newest_first = await client.get_prefix(b"foo", sort_order="descend", sort_target="mod")
        seen["prefix_by_mod_descending"] = [item.key.decode() for item in newest_first]
        seen["range"] = [item.key.decode() for item in await client.get_range(b"foo1", b"zoo")]
        seen["all"] = [item.key.decode() for item in await client.get_all(keys_only=True)]

        held, responses = await client.transaction(
            compare=[t.value(b"foo") == b"baz", t.version(b"foo") > 1, t.create(b"zoo") == 5],
            success=[t.put(b"foo", b"qux"), t.get(b"foo1")],
            failure=[t.delete(b"foo1")],
        )  # 7
        put_revision = responses[0].response_put.header.revision
        seen["txn_held"] = [held, put_revision, [value.decode() for value, _ in responses[1]]]
        failed, responses = await client.transaction(
            compare=[t.mod(b"foo") < 7],
            success=[t.put(b"foo", b"never")],
            failure=[t.delete(b"foo2", prev_kv=True), t.get(b"foo2")],
        )  # 8
        deleted = responses[0].response_delete_range
        seen["txn_failed"] = [failed, deleted.deleted, [kv(item) for item in deleted.prev_kvs], responses[1]]

        gone = await client.delete(b"zoo", prev_kv=True)  # 9
        seen["delete"] = [gone.deleted, kv(gone.prev_kv), gone.header.revision]
        seen["delete_missing"] = await client.delete(b"zoo")
        seen["delete_prefix"] = (await client.delete_prefix(b"foo")).deleted  # 10
        seen["after_deletes"] = (await client.get_all()).count

        seen["members"] = sorted(
            [[m.id, m.name, list(m.peer_urls), list(m.client_urls)] async for m in client.members()], key=str
        )
        status = await client.status()
        seen["status"] = {
            "version": status.version, "db_size": status.db_size, "leader": [status.leader.id, status.leader.name],
            "raft_index": status.raft_index, "raft_term": status.raft_term,
        }  # fmt: skip

        await client.compact(8)
        try:
            await client.kvstub.Range(rpc.RangeRequest(key=b"foo", revision=7), timeout=10)
            seen["below_compaction"] = None
        except rpc.AioRpcError as error:
            seen["below_compaction"] = [error.code().name, error.details()]
        at = await client.kvstub.Range(rpc.RangeRequest(key=b"foo", range_end=b"fop", revision=8), timeout=10)
        seen["at_compaction"] = [kv(item) for item in at.kvs]
        try:
            await client.compact(8)
            seen["compact_again"] = None
        except aetcd.ClientError as error:
            seen["compact_again"] = str(error)
    return seen


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    print(json.dumps(asyncio.run(scenario(host, int(port)))))


if __name__ == "__main__":
    main()
