"""``GET /v0/watch``'s parts without a network: the query, the SSE text of
answers, and the pump that writes a session to a stream (keep-alives on a
fake clock, backpressure, the end after a compaction)."""

from __future__ import annotations

import base64
import json

import pytest
from twisted.internet.defer import Deferred

from dkv.api.http_common import Call
from dkv.api.watch_gateway import SinkPump
from dkv.api.watch_sse import KEEPALIVE, parse, prefix_end, render
from dkv.errors import InvalidArgument
from dkv.pb.etcd_rpc_pb2 import WatchCreateRequest, WatchRequest
from dkv.watch import WatchSession, WatchSettings
from tests.watch.test_hub import World


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def call(query: dict[str, str], headers: dict[bytes, list[bytes]] | None = None) -> Call:
    return Call(b"", {k.encode(): [v.encode()] for k, v in query.items()}, {}, headers=headers)


def test_prefix_end() -> None:
    assert prefix_end(b"app/") == b"app0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"
    assert prefix_end(b"") == b"\x00"


def test_the_query() -> None:
    create = parse(call({"key": b64(b"app/"), "prefix": "true", "start_revision": "7", "prev_kv": "1"}))
    assert (create.key, create.range_end, create.start_revision, create.prev_kv) == (b"app/", b"app0", 7, True)
    assert parse(call({"key": "", "prefix": "true"})).range_end == b"\x00"  # every key
    resumed = parse(call({"key": b64(b"k"), "start_revision": "2"}, {b"last-event-id": [b"41"]}))
    assert resumed.start_revision == 42


@pytest.mark.parametrize(
    ("query", "headers", "message"),
    [
        ({}, None, "missing query parameter 'key'"),
        ({"key": "%%"}, None, "key is not valid base64"),
        ({"key": ""}, None, "key must not be empty (use prefix=true to watch every key)"),
        ({"key": "YQ==", "start_revision": "x"}, None, "start_revision must be a revision (a whole number >= 0)"),
        ({"key": "YQ==", "start_revision": "-1"}, None, "start_revision must be a revision (a whole number >= 0)"),
        ({"key": "YQ==", "prefix": "maybe"}, None, "prefix must be true or false"),
        ({"key": "Yg==", "range_end": "YQ=="}, None, "range_end must be after key"),
        ({"key": "YQ=="}, {b"last-event-id": [b"abc"]}, "Last-Event-ID must be a revision (a whole number >= 0)"),
    ],
)
def test_bad_queries(query: dict[str, str], headers: dict[bytes, list[bytes]] | None, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(call(query, headers))
    assert caught.value.message == message


class Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.writable = True
        self.finished = False
        self.waiters: list[Deferred[None]] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def finish(self) -> None:
        self.finished = True

    def when_writable(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiters.append(d)
        return d

    def drain(self) -> None:
        self.writable = True
        while self.waiters:
            self.waiters.pop(0).callback(None)

    def text(self) -> str:
        return b"".join(self.data).decode()


def start(world: World, sink: Sink, **create: object) -> SinkPump:
    pump = SinkPump(render, KEEPALIVE, world.hub.settings.sse_keepalive)
    pump.session = WatchSession(world.hub, lambda header: None, pump.wake)
    pump.session.handle(WatchRequest(create_request=WatchCreateRequest(**create)))  # type: ignore[arg-type]
    pump.attach(sink, world.clock)
    return pump


def events_of(text: str) -> list[tuple[str | None, dict]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id"), json.loads(fields["data"])))
    return out


def test_events_keepalives_and_backpressure() -> None:
    world = World(WatchSettings(sse_keepalive=5.0))
    sink = Sink()
    pump = start(world, sink, key=b"k", range_end=b"l")
    assert sink.text() == ": watching, revision 1\n\n"
    world.clock.advance(5)
    assert sink.data[-1] == KEEPALIVE
    sink.writable = False
    world.put(b"k1", b"v")  # waits: the client reads slowly
    world.clock.advance(5)  # no keep-alive into a full connection either
    assert events_of(sink.text()) == [] and sink.data[-1] == KEEPALIVE and len(sink.data) == 2
    sink.drain()
    assert events_of(sink.text()) == [
        ("2", {"type": "PUT", "key": b64(b"k1"), "value": b64(b"v"), "create_revision": 2, "mod_revision": 2,
               "version": 1, "lease": 0}),
    ]  # fmt: skip
    pump.stop()
    world.clock.advance(10)
    world.put(b"k2")
    assert world.hub.counts == (0, 0) and len(events_of(sink.text())) == 1 and sink.data[-1] != KEEPALIVE


def test_a_compacted_start_ends_the_stream() -> None:
    world = World()
    for _ in range(3):
        world.put(b"k")  # 2..4
    world.store.compact(3)
    sink = Sink()
    start(world, sink, key=b"k", start_revision=2)
    world.settle()
    assert sink.text().endswith('event: compacted\ndata: {"compact_revision": 3}\n\n')
    assert sink.finished and world.hub.counts == (0, 0)
    world.clock.advance(100)
    assert not world.clock.getDelayedCalls()  # the keep-alives stopped too
