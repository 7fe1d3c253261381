"""What test_watch's aetcd test does through aetcd, in a process of its own
(see ``aetcd_scenario``: aetcd's protobuf modules and dkv's cannot share an
interpreter):

    python -m tests.compat.aetcd_watch_scenario HOST:PORT

writes a few keys (a fresh cluster: the first write is revision 2), replays
them with ``watch_prefix`` from revision 2 with ``prev_kv``, follows a live
write, takes one event with ``watch_once``, and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aetcd


def event(item: Any) -> list[Any]:
    prev = item.prev_kv.value.decode() if item.prev_kv is not None and item.prev_kv.key else None
    kind = getattr(item.kind, "value", item.kind)
    return [str(kind), item.kv.key.decode(), item.kv.value.decode(), item.kv.mod_revision, prev]


async def scenario(host: str, port: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=port, timeout=10) as client:
        await client.put(b"w/a", b"1")  # 2
        await client.put(b"w/a", b"2")  # 3
        await client.delete(b"w/a")  # 4
        watch = await client.watch_prefix(b"w/", start_revision=2, prev_kv=True)
        got = []
        async for item in watch:
            got.append(event(item))
            if len(got) == 3:
                await client.put(b"w/b", b"live")  # 5
            if len(got) == 4:
                break
        await watch.cancel()
        seen["prefix"] = got
        once = await client.watch_once(b"w/b", timeout=10, start_revision=5)
        seen["once"] = event(once)
    return seen


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    print(json.dumps(asyncio.run(scenario(host, int(port)))))


if __name__ == "__main__":
    main()
