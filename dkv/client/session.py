# test-case-name: tests.compat.test_client_recipes
"""A recipe's session: a lease kept alive for as long as its owner lives,
as etcd's ``concurrency.Session`` (default TTL 60 seconds). Keys a lock or
an election writes are bound to it, so they vanish when the owner dies and
its keep-alives stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from dkv.client.errors import DkvClientError, NotFound
from dkv.client.lease import KeepAlive, Lease

if TYPE_CHECKING:
    from dkv.client.client import Client

DEFAULT_TTL = 60


class Session:
    """A granted lease and its keep-alive loop. ``lost`` fires (with the
    reason) if the lease is lost while the session is open."""

    def __init__(self, lease: Lease, keep_alive: KeepAlive) -> None:
        self.lease = lease
        self.keep_alive = keep_alive
        self.closed = False

    @classmethod
    async def create(cls, client: Client, ttl: int = DEFAULT_TTL) -> Session:
        lease = await client.grant(ttl)
        return cls(lease, lease.keep_alive())

    @property
    def lease_id(self) -> int:
        return self.lease.id

    @property
    def lost(self) -> defer.Deferred[DkvClientError]:
        return self.keep_alive.lost

    async def close(self) -> None:
        """Stop the keep-alives and revoke the lease (its keys go with it)."""
        if self.closed:
            return
        self.closed = True
        self.keep_alive.stop()
        try:
            await self.lease.revoke()
        except NotFound:
            pass  # expired already

    def orphan(self) -> None:
        """Stop the keep-alives only: the lease lives until its TTL runs out."""
        self.closed = True
        self.keep_alive.stop()
