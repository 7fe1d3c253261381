# test-case-name: tests.client.test_client_kv,tests.client.test_client_http,tests.compat.test_client_recipes
"""``Client``: etcd's v3 API over its JSON gateway, on treq, with Deferreds.

Every method returns a Deferred (await it from an ``async def`` run with
``twisted.internet.defer.ensureDeferred``). Keys and values are bytes,
revisions and lease ids ints. Requests go to the endpoints with failover
(``dkv.client.transport``): writes carry an ``Idempotency-Key`` so a retry
after a timeout is never applied twice by dkv.

    client = Client(["127.0.0.1:2379", "127.0.0.1:22379"], reactor=reactor)
    await client.put(b"k", b"v")
    kv = await client.get(b"k")                 # a KeyValue, or None
    rows = await client.prefix(b"k")            # a RangeResult
    w = client.watch(b"k", prefix=True)         # an async iterator of Events
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from treq.client import HTTPClient
from twisted.internet import defer

from dkv.client.errors import DkvClientError, NotFound
from dkv.client.lease import KeepAlive, Lease
from dkv.client.requests import delete_request, put_request, range_request, watch_create_request
from dkv.client.tls import ClientTls
from dkv.client.transport import Transport
from dkv.client.txn import Txn
from dkv.client.values import (
    DeleteResult,
    KeyValue,
    LeaseTimeToLive,
    Member,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
    as_int,
)
from dkv.client.watch import Watch

T = TypeVar("T")


def _deferred(coroutine: Coroutine[Any, Any, T]) -> defer.Deferred[T]:
    return defer.ensureDeferred(coroutine)


def default_reactor() -> Any:
    """The global reactor (imported only when no reactor was given, so that
    importing dkv.client never installs one)."""
    from twisted.internet import reactor  # the caller's reactor, installed by now

    return reactor


class Client:
    """A client of a cluster speaking etcd's v3 JSON gateway (dkv or etcd).

    ``endpoints``: ``HOST:PORT`` or URLs, a list or comma-separated.
    ``timeout``: seconds a call may take in all (retries included);
    ``attempt_timeout``: seconds one attempt may take. ``retry_writes``:
    retry a write whose outcome is unknown with its idempotency key (turn
    off against etcd, which ignores the key: then such a write raises
    OutcomeUnknown at once). ``tls``: the CA and client certificate for
    ``https://`` endpoints (``dkv.client.tls.ClientTls``)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        reactor: Any = None,
        timeout: float = 15.0,
        attempt_timeout: float = 5.0,
        retry_writes: bool = True,
        http: HTTPClient | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.transport = Transport(
            endpoints,
            reactor if reactor is not None else default_reactor(),
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            retry_writes=retry_writes,
            http=http,
            tls=tls,
        )

    # -- KV

    def range(self, key: bytes, range_end: bytes | None = None, **options: Any) -> defer.Deferred[RangeResult]:
        """etcd's Range: key, or [key, range_end); options: prefix, from_key,
        revision, limit, sort_target (KEY VERSION CREATE MOD VALUE),
        sort_order (ASCEND DESCEND), serializable, keys_only, count_only,
        min/max_mod_revision, min/max_create_revision."""
        body = range_request(key, range_end, **options)
        return _deferred(self._decoded("/v3/kv/range", body, RangeResult.from_json))

    def prefix(self, prefix: bytes, **options: Any) -> defer.Deferred[RangeResult]:
        """Every key starting with prefix (sorted by key)."""
        return self.range(prefix, prefix=True, **options)

    def get(self, key: bytes, *, revision: int = 0, serializable: bool = False) -> defer.Deferred[KeyValue | None]:
        """One key's KeyValue, or None when there is no such key."""

        async def one() -> KeyValue | None:
            found = await self.range(key, revision=revision, serializable=serializable)
            return found.kvs[0] if found.kvs else None

        return _deferred(one())

    def put(self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> defer.Deferred[PutResult]:
        body = put_request(key, value, lease=lease, prev_kv=prev_kv)
        return _deferred(self._decoded("/v3/kv/put", body, PutResult.from_json, write=True))

    def delete(self, key: bytes, range_end: bytes | None = None, **options: Any) -> defer.Deferred[DeleteResult]:
        """etcd's DeleteRange; options: prefix, from_key, prev_kv."""
        body = delete_request(key, range_end, **options)
        return _deferred(self._decoded("/v3/kv/deleterange", body, DeleteResult.from_json, write=True))

    def txn(self, txn: Txn) -> defer.Deferred[TxnResult]:
        """Run a transaction (build it with ``dkv.client.txn``)."""
        return _deferred(self._decoded("/v3/kv/txn", txn.body(), TxnResult.from_json, write=txn.writes))

    def compact(self, revision: int, *, physical: bool = False) -> defer.Deferred[None]:
        body: dict[str, Any] = {"revision": str(revision)}
        if physical:
            body["physical"] = True
        return _deferred(self._void("/v3/kv/compaction", body, write=True))

    # -- watch

    def watch(self, key: bytes, range_end: bytes | None = None, **options: Any) -> Watch:
        """Watch key (or a range: range_end, prefix=True, from_key=True) from
        start_revision (default: now); options prev_kv, no_put, no_delete,
        progress_notify. See ``dkv.client.watch.Watch``."""
        return Watch(self.transport, watch_create_request(key, range_end, **options))

    # -- leases

    def grant(self, ttl: int, lease_id: int = 0) -> defer.Deferred[Lease]:
        """A new lease of ttl seconds (the server may raise it to its minimum)."""

        async def grant() -> Lease:
            body: dict[str, Any] = {"TTL": str(ttl)}
            if lease_id:
                body["ID"] = str(lease_id)
            answer = await self.transport.call("/v3/lease/grant", body, write=True)
            if answer.get("error"):
                raise DkvClientError(str(answer["error"]))
            return Lease(self, as_int(answer.get("ID")), as_int(answer.get("TTL")))

        return _deferred(grant())

    def revoke(self, lease_id: int) -> defer.Deferred[None]:
        """Revoke a lease and delete its keys. NotFound if there is none."""
        return _deferred(self._void("/v3/lease/revoke", {"ID": str(lease_id)}, write=True))

    def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> defer.Deferred[int]:
        """Renew a lease once: its TTL. NotFound if it is gone."""

        async def renew() -> int:
            answer = await self.transport.call(
                "/v3/lease/keepalive", {"ID": str(lease_id)}, timeout=timeout, first_line=True
            )
            result = answer.get("result", answer) if isinstance(answer, dict) else {}
            ttl = as_int(result.get("TTL"))
            if ttl <= 0:
                raise NotFound("etcdserver: requested lease not found", 5)
            return ttl

        return _deferred(renew())

    def keep_alive(self, lease_id: int, ttl: int) -> KeepAlive:
        """Start renewing lease_id every ttl/3 seconds (see KeepAlive)."""
        return KeepAlive(self, lease_id, ttl).start()

    def time_to_live(self, lease_id: int, *, keys: bool = False) -> defer.Deferred[LeaseTimeToLive]:
        """A lease's remaining TTL (-1 when it does not exist) and, with keys, its keys."""
        body: dict[str, Any] = {"ID": str(lease_id)}
        if keys:
            body["keys"] = True
        return _deferred(self._decoded("/v3/lease/timetolive", body, LeaseTimeToLive.from_json))

    def leases(self) -> defer.Deferred[list[int]]:
        """The ids of every live lease."""

        async def ids() -> list[int]:
            answer = await self.transport.call("/v3/lease/leases", {})
            return [as_int(lease.get("ID")) for lease in answer.get("leases", ())]

        return _deferred(ids())

    # -- cluster

    def members(self) -> defer.Deferred[list[Member]]:
        async def members() -> list[Member]:
            answer = await self.transport.call("/v3/cluster/member/list", {})
            return [Member.from_json(m) for m in answer.get("members", ())]

        return _deferred(members())

    def status(self) -> defer.Deferred[Status]:
        """The Maintenance.Status of the endpoint that answers."""
        return _deferred(self._decoded("/v3/maintenance/status", {}, Status.from_json))

    def close(self) -> defer.Deferred[None]:
        """Close idle connections (open watches are closed by their owners)."""
        return self.transport.close()

    # -- plumbing

    async def _decoded(self, path: str, body: dict[str, Any], decode: Any, *, write: bool = False) -> Any:
        return decode(await self.transport.call(path, body, write=write))

    async def _void(self, path: str, body: dict[str, Any], *, write: bool = False) -> None:
        await self.transport.call(path, body, write=write)
