# test-case-name: tests.compat.test_client_recipes
"""A distributed lock with etcd's ``concurrency.Mutex`` semantics, so that it
excludes (and is excluded by) ``etcdctl lock`` and etcd's own clients.

The lock NAME is the key prefix ``NAME/``. A contender's key is
``NAME/`` + its session lease id in lowercase hex (no padding), written
bound to the lease by one transaction: if the key's create revision is 0
(it does not exist) put it with an empty value, else read it; both branches
also read the key under the prefix with the lowest create revision (the
holder). The contender's revision is its key's create revision. If no key
is older, it holds the lock; otherwise it waits for its predecessor's
deletion (``dkv.client.waits``), then checks its own key still exists
(else the session expired: ``SessionExpired``). Release deletes the key.

    lock = Lock(client, b"my-lock")          # a session of ttl seconds is made on acquire
    await lock.acquire()
    try: ...
    finally: await lock.release()            # also revokes a session the lock made
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dkv.client import txn
from dkv.client.errors import SessionExpired
from dkv.client.session import DEFAULT_TTL, Session
from dkv.client.values import Header, RangeResult, prefix_end
from dkv.client.waits import wait_deletes

if TYPE_CHECKING:
    from dkv.client.client import Client


def member_key(prefix: bytes, lease_id: int) -> bytes:
    """A contender's key under prefix (``NAME/``): the lease id in lowercase hex."""
    return prefix + format(lease_id, "x").encode()


def oldest(prefix: bytes) -> txn.Op:
    """Read the key under prefix with the lowest create revision."""
    return txn.get(prefix, prefix_end(prefix), sort_target="CREATE", sort_order="ASCEND", limit=1)


class Lock:
    """A lock on name; give a Session to share one, or ttl for a session the
    lock makes on acquire (and revokes on release)."""

    def __init__(self, client: Client, name: bytes, *, session: Session | None = None, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.prefix = name + b"/"
        self.session = session
        self.ttl = ttl
        self._own_session = session is None
        #: My key while held (or waited for), else None.
        self.key: bytes | None = None
        #: My key's create revision.
        self.revision = -1
        #: The header of the answer that made this lock mine.
        self.header: Header | None = None

    async def acquire(self) -> Lock:
        """Wait until the lock is held. On failure or cancellation the key
        written is deleted again."""
        if self.session is None:
            self.session = await Session.create(self.client, self.ttl)
        key = member_key(self.prefix, self.session.lease_id)
        self.key = key
        try:
            result = await self.client.txn(
                txn.Txn()
                .when(txn.create_revision(key) == 0)
                .then(txn.put(key, b"", lease=self.session.lease_id), oldest(self.prefix))
                .otherwise(txn.get(key), oldest(self.prefix))
            )
            mine = result.responses[0]
            if result.succeeded:
                self.revision = result.header.revision
            else:
                assert isinstance(mine, RangeResult) and mine.kvs, "the key the compare found is there"
                self.revision = mine.kvs[0].create_revision
            owner = result.responses[1]
            assert isinstance(owner, RangeResult)
            if not owner.kvs or owner.kvs[0].create_revision == self.revision:
                self.header = result.header
                return self
            await wait_deletes(self.client, self.prefix, self.revision - 1)
            found = await self.client.range(key)
            if not found.kvs:
                raise SessionExpired("mutex: session is expired")
            self.header = found.header
            return self
        except BaseException:
            await self._abandon()
            raise

    async def release(self) -> None:
        """Delete my key (the next waiter then holds the lock); revoke the
        session if the lock made it."""
        if self.key is not None:
            await self.client.delete(self.key)
        self.key, self.revision, self.header = None, -1, None
        if self._own_session and self.session is not None:
            await self.session.close()
            self.session = None

    async def _abandon(self) -> None:
        try:
            await self.release()
        except Exception:
            pass  # best effort: the session's lease takes the key with it anyway

    async def __aenter__(self) -> Lock:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
