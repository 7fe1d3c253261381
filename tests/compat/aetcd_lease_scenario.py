"""What test_etcdctl_lease's aetcd test does through aetcd, in a process of
its own (see ``aetcd_scenario``: aetcd's protobuf modules and dkv's cannot
share an interpreter):

    python -m tests.compat.aetcd_lease_scenario HOST:PORT

grants a long lease with a chosen ID and a short one, attaches a key to
each, reads the leases back (granted TTL, keys), refreshes the long one
with a keep-alive, lets the short one expire (its key must be gone within a
deadline, polled), revokes the long one (its key is deleted, the lease is
gone) and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aetcd

LONG_ID = 0x1234
#: Long enough for any server's minimum TTL; short enough to wait for.
SHORT_TTL = 3
#: How long the short lease may take to go: TTL, an election timeout and slack.
EXPIRY_DEADLINE = 20.0


async def value(client: aetcd.Client, key: bytes) -> str | None:
    got = await client.get(key)
    return None if got is None else got.value.decode()


async def scenario(host: str, port: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=port, timeout=10) as client:
        long = await client.lease(60, lease_id=LONG_ID)
        short = await client.lease(SHORT_TTL)
        seen["granted"] = [long.id, long.ttl, short.id != 0, short.id != LONG_ID, short.ttl]
        await client.put(b"l/long", b"1", lease=long)
        await client.put(b"l/short", b"2", lease=short.id)
        info = await client.get_lease_info(long.id, keys=True)
        seen["info"] = [info.ID, info.grantedTTL, 0 < info.TTL <= 60, [k.decode() for k in info.keys]]
        seen["keys"] = [k.decode() for k in await short.keys()]
        refreshed = await long.refresh()
        seen["refresh"] = [refreshed.ID, refreshed.TTL]
        seen["attached"] = [await value(client, b"l/long"), await value(client, b"l/short")]

        deadline = time.monotonic() + EXPIRY_DEADLINE
        while await value(client, b"l/short") is not None:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {SHORT_TTL} s lease's key is still there after {EXPIRY_DEADLINE} s")
            await asyncio.sleep(0.2)  # polling the server, not waiting for our own state
        seen["expired_ttl"] = (await client.get_lease_info(short.id, keys=False)).TTL
        seen["long_survives"] = await value(client, b"l/long")

        await long.revoke()
        seen["revoked"] = [await value(client, b"l/long"), (await client.get_lease_info(long.id)).TTL]
        try:
            await client.put(b"l/again", b"3", lease=long.id)
            seen["put_on_revoked"] = "accepted"
        except aetcd.exceptions.ClientError as e:
            seen["put_on_revoked"] = type(e).__name__ + ": " + str(e.args[0] if e.args else e)
    return seen


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    print(json.dumps(asyncio.run(scenario(host, int(port)))))


if __name__ == "__main__":
    main()
