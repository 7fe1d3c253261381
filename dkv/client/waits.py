# test-case-name: tests.compat.test_client_recipes
"""Waiting for keys to go, as etcd's concurrency recipes wait: each waiter
watches only the deletion of its predecessor -- the key under the prefix
with the greatest create revision below its own -- never the whole prefix,
so a release wakes one waiter, not all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dkv.client.values import DELETE, Header, prefix_end

if TYPE_CHECKING:
    from dkv.client.client import Client


async def wait_delete(client: Client, key: bytes, revision: int) -> None:
    """Return once key is deleted at or after revision."""
    watch = client.watch(key, start_revision=revision)
    try:
        while True:
            event = await watch.next()
            if event.type == DELETE:
                return
    finally:
        watch.close()


async def wait_deletes(client: Client, prefix: bytes, max_create_revision: int) -> Header:
    """Return (the header of the last read) once no key under prefix has a
    create revision at or below max_create_revision: wait for the newest
    such key's deletion, then look again."""
    while True:
        found = await client.range(
            prefix, prefix_end(prefix), sort_target="CREATE", sort_order="DESCEND", limit=1,
            max_create_revision=max_create_revision,
        )  # fmt: skip
        if not found.kvs:
            return found.header
        await wait_delete(client, found.kvs[0].key, found.header.revision)
