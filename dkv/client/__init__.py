# test-case-name: tests.client.test_client_kv,tests.compat.test_client_recipes
"""``dkv.client``: a Twisted-native client of etcd's v3 API (dkv or etcd),
over the JSON gateway with treq.

    from twisted.internet import defer, task
    from dkv.client import Client, Lock, txn

    async def main(reactor):
        client = Client("127.0.0.1:7071,127.0.0.1:7072", reactor=reactor)
        await client.put(b"greeting", b"hello")
        kv = await client.get(b"greeting")
        await client.txn(txn.Txn().when(txn.value(b"greeting") == b"hello").then(txn.put(b"greeting", b"hi")))
        async with Lock(client, b"jobs"):
            ...

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))

Modules: ``client`` (the Client), ``transport`` (endpoints, failover,
idempotency keys), ``values`` / ``requests`` (the gateway's JSON),
``txn`` (the transaction builder), ``watch``, ``lease``, ``session``,
``lock``, ``election``, ``errors``, ``tls`` (HTTPS with a CA and a client
certificate); ``blocking`` wraps the Client for scripts
that are not Twisted programs.
"""

from dkv.client import txn
from dkv.client.client import Client
from dkv.client.election import Election, Observer
from dkv.client.errors import (
    Compacted,
    DkvClientError,
    NoElectionLeader,
    NoLeader,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    Unreachable,
    WatchClosed,
)
from dkv.client.lease import KeepAlive, Lease
from dkv.client.lock import Lock
from dkv.client.session import Session
from dkv.client.tls import ClientTls
from dkv.client.values import (
    DeleteResult,
    Event,
    Header,
    KeyValue,
    LeaseTimeToLive,
    Member,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
)
from dkv.client.watch import Watch

__all__ = [
    "Client",
    "ClientTls",
    "Compacted",
    "DeleteResult",
    "DkvClientError",
    "Election",
    "Event",
    "Header",
    "KeepAlive",
    "KeyValue",
    "Lease",
    "LeaseTimeToLive",
    "Lock",
    "Member",
    "NoElectionLeader",
    "NoLeader",
    "NotFound",
    "NotLeader",
    "Observer",
    "OutcomeUnknown",
    "PutResult",
    "RangeResult",
    "Session",
    "SessionExpired",
    "Status",
    "TxnResult",
    "Unreachable",
    "Watch",
    "WatchClosed",
    "txn",
]
