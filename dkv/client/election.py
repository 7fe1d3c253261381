# test-case-name: tests.compat.test_client_recipes
"""Leader election with etcd's ``concurrency.Election`` semantics, so that
``etcdctl elect`` sees a dkv Election's leader and the reverse.

The election NAME is the key prefix ``NAME/``; a candidate's key is
``NAME/`` + its session lease id in lowercase hex, its value the proposal.
``campaign`` writes the key if it does not exist (or proclaims the new
value on the key it has) and waits until every key with a lower create
revision is gone: the leader is the key with the lowest create revision.
``proclaim`` changes the leader's value while it still leads; ``resign``
deletes the leader's key; ``leader`` reads the current leader's key-value;
``observe`` follows the leader's values (an async iterator of KeyValues).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.python.failure import Failure

from dkv.client import txn
from dkv.client.errors import DkvClientError, NoElectionLeader, NotLeader, WatchClosed
from dkv.client.lock import member_key, oldest
from dkv.client.queue import ItemQueue
from dkv.client.session import DEFAULT_TTL, Session
from dkv.client.values import DELETE, PUT, Header, KeyValue, RangeResult, prefix_end
from dkv.client.waits import wait_deletes

if TYPE_CHECKING:
    from dkv.client.client import Client
    from dkv.client.watch import Watch


class Election:
    """An election on name; give a Session to share one, or ttl for a
    session made on the first campaign (revoked by ``close``)."""

    def __init__(self, client: Client, name: bytes, *, session: Session | None = None, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.prefix = name + b"/"
        self.session = session
        self.ttl = ttl
        self._own_session = session is None
        #: My key while I lead (or campaign), else None.
        self.key: bytes | None = None
        #: My key's create revision.
        self.revision = -1
        self.header: Header | None = None

    async def campaign(self, value: bytes) -> None:
        """Stand with value; returns once this candidate leads."""
        if self.session is None:
            self.session = await Session.create(self.client, self.ttl)
        key = member_key(self.prefix, self.session.lease_id)
        result = await self.client.txn(
            txn.Txn()
            .when(txn.create_revision(key) == 0)
            .then(txn.put(key, value, lease=self.session.lease_id))
            .otherwise(txn.get(key))
        )
        self.key, self.revision = key, result.header.revision
        if not result.succeeded:
            mine = result.responses[0]
            assert isinstance(mine, RangeResult) and mine.kvs
            self.revision = mine.kvs[0].create_revision
            if mine.kvs[0].value != value:
                await self.proclaim(value)
        try:
            await wait_deletes(self.client, self.prefix, self.revision - 1)
        except BaseException:
            try:
                await self.resign()
            except Exception:
                pass  # best effort: the session's lease takes the key with it anyway
            raise
        self.header = result.header

    async def proclaim(self, value: bytes) -> None:
        """Set the leader's value without a new election; NotLeader if this
        candidate's key is gone."""
        if self.key is None or self.session is None:
            raise NotLeader("election: not leader")
        result = await self.client.txn(
            txn.Txn()
            .when(txn.create_revision(self.key) == self.revision)
            .then(txn.put(self.key, value, lease=self.session.lease_id))
        )
        if not result.succeeded:
            self.key = None
            raise NotLeader("election: not leader")
        self.header = result.header

    async def resign(self) -> None:
        """Give up leading (or candidacy): delete my key if it is still mine."""
        if self.key is None:
            return
        key, self.key = self.key, None
        await self.client.txn(txn.Txn().when(txn.create_revision(key) == self.revision).then(txn.delete(key)))
        self.revision = -1

    async def leader(self) -> KeyValue:
        """The current leader's key-value; NoElectionLeader if nobody leads."""
        found = await self.client.txn(txn.Txn().then(oldest(self.prefix)))
        rows = found.responses[0]
        assert isinstance(rows, RangeResult)
        if not rows.kvs:
            raise NoElectionLeader("election: no leader")
        return rows.kvs[0]

    def observe(self) -> Observer:
        """Follow the leader's values, from the current one on."""
        return Observer(self.client, self.prefix)

    async def close(self) -> None:
        """Resign, and revoke the session if the election made it."""
        await self.resign()
        if self._own_session and self.session is not None:
            await self.session.close()
            self.session = None


class Observer:
    """The values of an election's leader, each a KeyValue, as etcd's
    ``Election.Observe``: the current leader's (waiting for one if there is
    none), every new value it proclaims, then the next leader's, and so
    on. ``close()`` ends it (readers then see StopAsyncIteration)."""

    def __init__(self, client: Client, prefix: bytes) -> None:
        self.client = client
        self.prefix = prefix
        self.values: ItemQueue[KeyValue] = ItemQueue()
        self._watch: Watch | None = None
        self._closed = False
        self._running = defer.ensureDeferred(self._run())
        self._running.addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        if not self._closed:
            error = failure.value
            self.values.fail(error if isinstance(error, DkvClientError) else DkvClientError(repr(error)))

    def next(self) -> defer.Deferred[KeyValue]:
        return self.values.get()

    def __aiter__(self) -> Observer:
        return self

    async def __anext__(self) -> KeyValue:
        try:
            return await self.next()
        except WatchClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.values.fail(WatchClosed("observer closed"), drop=True)
        if self._watch is not None:
            self._watch.close()
        self._running.cancel()

    async def _run(self) -> None:
        while not self._closed:
            found = await self.client.txn(txn.Txn().then(oldest(self.prefix)))
            rows = found.responses[0]
            assert isinstance(rows, RangeResult)
            if rows.kvs:
                kv, revision = rows.kvs[0], found.header.revision
            else:
                self._watch = self.client.watch(
                    self.prefix, prefix_end(self.prefix), start_revision=found.header.revision
                )
                while True:
                    event = await self._watch.next()
                    if event.type == PUT:
                        kv, revision = event.kv, event.kv.mod_revision
                        break
                self._watch.close()
            self.values.put(kv)
            self._watch = self.client.watch(kv.key, start_revision=revision + 1)
            while True:
                event = await self._watch.next()
                if event.type == DELETE:
                    break
                self.values.put(event.kv)
            self._watch.close()
