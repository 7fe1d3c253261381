# test-case-name: tests.client.test_client_lease,tests.compat.test_client_recipes
"""Leases: a granted lease, and the loop that keeps it alive.

etcd's gateway serves ``LeaseKeepAlive`` (a bidirectional stream) at
``POST /v3/lease/keepalive``: one request in the body, one
``{"result": LeaseKeepAliveResponse}`` line back, then the stream ends. So a
keep-alive here is one POST; ``TTL`` 0 (omitted) in the answer means the
lease no longer exists.

``KeepAlive`` renews every ``ttl / 3`` seconds (as etcd's client does).
A renewal that fails for want of a reachable leader is tried again at the
next beat; the lease is counted **lost** when the server says it is gone
or when its TTL has run out since the last renewal that succeeded, and
``lost`` then fires with the reason (a NotFound or SessionExpired).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer, task

from dkv.client.errors import DkvClientError, NotFound, SessionExpired
from dkv.client.values import LeaseTimeToLive

if TYPE_CHECKING:
    from dkv.client.client import Client


class Lease:
    """A lease granted with ``ttl`` seconds; ``id`` is etcd's lease id."""

    def __init__(self, client: Client, lease_id: int, ttl: int) -> None:
        self.client = client
        self.id = lease_id
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"Lease(id={self.id:x}, ttl={self.ttl})"

    def keep_alive(self) -> KeepAlive:
        """Start keeping the lease alive; ``stop()`` the loop when done."""
        return KeepAlive(self.client, self.id, self.ttl).start()

    def keep_alive_once(self) -> defer.Deferred[int]:
        return self.client.keep_alive_once(self.id)

    def revoke(self) -> defer.Deferred[None]:
        return self.client.revoke(self.id)

    def time_to_live(self, keys: bool = False) -> defer.Deferred[LeaseTimeToLive]:
        return self.client.time_to_live(self.id, keys=keys)


class KeepAlive:
    """Renews lease_id every ttl/3 seconds until stopped or lost."""

    def __init__(self, client: Client, lease_id: int, ttl: int) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.clock = client.transport.clock
        #: When the lease runs out unless renewed (by the clock).
        self.expires_at = self.clock.seconds() + ttl
        #: How many renewals succeeded.
        self.renewals = 0
        #: Fires with the reason (a DkvClientError) when the lease is lost.
        self.lost: defer.Deferred[DkvClientError] = defer.Deferred()
        self._loop = task.LoopingCall(self._beat)
        self._loop.clock = self.clock

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> KeepAlive:
        self._loop.start(max(self.ttl / 3.0, 0.1), now=True)
        return self

    def stop(self) -> None:
        """Stop renewing (the lease lives on until its TTL runs out)."""
        if self._loop.running:
            self._loop.stop()

    def _lose(self, reason: DkvClientError) -> None:
        self.stop()
        if not self.lost.called:
            self.lost.callback(reason)

    async def _beat(self) -> None:
        try:
            ttl = await self.client.keep_alive_once(self.lease_id, timeout=max(self.ttl / 3.0, 1.0))
        except NotFound as e:
            self._lose(e)
            return
        except DkvClientError:
            if self.clock.seconds() >= self.expires_at:
                self._lose(SessionExpired(f"lease {self.lease_id:x} expired: no keep-alive got through in time"))
            return
        self.renewals += 1
        self.ttl = ttl
        self.expires_at = self.clock.seconds() + ttl
