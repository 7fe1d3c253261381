# test-case-name: tests.test_bench_scripts
"""etcd's gRPC API from a benchmark, through the generated stubs of
``dkv.pb`` (the same client code for etcd and dkv): channels, a
request feed for bidirectional streams, a Watch stream carrying many
watchers, and the probes that tell whether a system serves a service
(gRPC ``UNIMPLEMENTED``: it does not, and the benchmark skips it).

Streams are driven by plain threads: grpcio's synchronous API takes the
requests of a stream from an iterator in a thread of its own and hands
the responses out as an iterator."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc

from dkv.pb import etcd_rpc_pb2 as rpc
from dkv.pb import etcd_rpc_pb2_grpc as rpc_grpc

#: Large enough for a watch response carrying a big batch of catch-up events.
_MAX_MESSAGE = 64 * 1024 * 1024


class NotServed(Exception):
    """The system answered UNIMPLEMENTED: it does not serve this service."""


def open_channel(address: str) -> grpc.Channel:
    """An insecure channel to host:port (one HTTP/2 connection)."""
    return grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)],
    )


def unimplemented(err: grpc.RpcError) -> bool:
    """Whether a failed call failed because the server lacks the method."""
    code = getattr(err, "code", None)
    return callable(code) and code() == grpc.StatusCode.UNIMPLEMENTED


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, range_end) every key starting with
    prefix (etcd's ``GetPrefixRangeEnd``); b"\\0" (every key) for a prefix of
    0xff bytes only."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class RequestFeed:
    """The request iterator of a bidirectional stream: ``put`` queues a
    request, ``close`` ends the iterator (the client half-closes)."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, request: Any) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not self._END:
            yield item


class WatchStream:
    """One ``etcdserverpb.Watch/Watch`` stream on a channel; any number of
    watchers share it (as etcd's Go client shares one stream between the
    watchers of one context). Responses come from ``responses()``."""

    def __init__(self, channel: grpc.Channel, timeout: float | None = None) -> None:
        self.feed = RequestFeed()
        self.call = rpc_grpc.WatchStub(channel).Watch(iter(self.feed), timeout=timeout)

    def create(self, key: bytes, range_end: bytes = b"", start_revision: int = 0) -> None:
        """Ask for one more watcher (the server assigns its watch_id)."""
        req = rpc.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision)
        self.feed.put(rpc.WatchRequest(create_request=req))

    def responses(self) -> Iterator[rpc.WatchResponse]:
        return iter(self.call)

    def close(self) -> None:
        """Half-close and cancel the call (iterating it then raises an
        RpcError with code CANCELLED)."""
        self.feed.close()
        self.call.cancel()


def probe_watch(channel: grpc.Channel, system: str, timeout: float = 10.0) -> None:
    """Create one watcher and wait for its ``created`` answer. NotServed
    ("SYSTEM does not serve Watch yet") on UNIMPLEMENTED; RuntimeError when
    the answer is not a created watcher; other RpcErrors go through."""
    stream = WatchStream(channel, timeout=timeout)
    try:
        stream.create(b"\0probe")
        first = next(stream.responses())
    except grpc.RpcError as e:
        if unimplemented(e):
            raise NotServed(f"{system} does not serve Watch yet ({e.details()})") from None
        raise
    finally:
        stream.close()
    if not first.created:
        raise RuntimeError(f"{system}: the first watch response is not a created watcher: {first}")


def probe_lease(channel: grpc.Channel, system: str, timeout: float = 10.0) -> None:
    """Grant a lease and revoke it. NotServed ("SYSTEM does not serve Lease
    yet") on UNIMPLEMENTED; other RpcErrors go through."""
    stub = rpc_grpc.LeaseStub(channel)
    try:
        granted = stub.LeaseGrant(rpc.LeaseGrantRequest(TTL=60), timeout=timeout)
    except grpc.RpcError as e:
        if unimplemented(e):
            raise NotServed(f"{system} does not serve Lease yet ({e.details()})") from None
        raise
    stub.LeaseRevoke(rpc.LeaseRevokeRequest(ID=granted.ID), timeout=timeout)
