"""dkv.client's Watch against stub gateways that stream etcd's
``{"result": ...}`` lines: events in order, resumption on the next endpoint
from the last revision + 1 after a disconnect (nothing lost, nothing
repeated), Compacted when the resume point is gone, a refusal as its error."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.client import Client, Compacted, NotFound, WatchClosed
from dkv.client.queue import ItemQueue
from dkv.client.values import b64
from dkv.testing.launcher import free_ports
from tests.http_stub import serving


def created(revision: int) -> dict[str, Any]:
    return {"result": {"header": {"revision": str(revision)}, "created": True}}


def events(revision: int, *changes: tuple[str, bytes, bytes]) -> dict[str, Any]:
    batch = []
    for kind, key, value in changes:
        event: dict[str, Any] = {"kv": {"key": b64(key), "mod_revision": str(revision)}}
        if value:
            event["kv"]["value"] = b64(value)
        if kind == "DELETE":
            event["type"] = "DELETE"
        batch.append(event)
    return {"result": {"header": {"revision": str(revision)}, "events": batch}}


class StreamStub:
    """Streams its lines to each watch request, then closes the response
    (or, with hold, keeps it open until the test ends). Records bodies."""

    def __init__(self, lines: list[dict[str, Any]], hold: bool, status: int = 200) -> None:
        self.bodies: list[Any] = []
        self.done = threading.Event()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                stub.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                for line in lines:
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
                if hold:
                    stub.done.wait(10)

        self.handler = Handler


@pytest.fixture
def streams() -> Iterator[Callable[..., tuple[StreamStub, str]]]:
    with ExitStack() as stack:

        def start(*lines: dict[str, Any], hold: bool = False, status: int = 200) -> tuple[StreamStub, str]:
            stub = StreamStub(list(lines), hold, status)
            stack.callback(stub.done.set)
            return stub, stack.enter_context(serving(stub.handler))

        yield start


def client(*endpoints: str) -> Client:
    from twisted.internet import reactor

    return Client(list(endpoints), reactor=reactor)


@pytest_twisted.ensureDeferred
async def test_a_watch_resumes_on_the_next_endpoint_from_the_last_revision(streams) -> None:
    first, a = streams(
        created(4), events(5, ("PUT", b"k1", b"a")), events(6, ("PUT", b"k2", b"b"), ("DELETE", b"k1", b""))
    )
    second, b = streams(
        created(6),
        events(6, ("DELETE", b"k1", b"")),  # already seen: dropped
        events(7, ("PUT", b"k3", b"c")),
        hold=True,
    )
    down = f"127.0.0.1:{free_ports(1)[0]}"
    w = client(a, down, b).watch(b"k", prefix=True, prev_kv=True)
    assert (await w.ready()).revision == 4
    seen = [await w.next() for _ in range(4)]
    assert [(e.type, e.kv.key, e.kv.value, e.revision) for e in seen] == [
        ("PUT", b"k1", b"a", 5),
        ("PUT", b"k2", b"b", 6),
        ("DELETE", b"k1", b"", 6),
        ("PUT", b"k3", b"c", 7),
    ]
    assert first.bodies == [{"create_request": {"key": "aw==", "range_end": "bA==", "prev_kv": True}}]
    assert second.bodies == [
        {"create_request": {"key": "aw==", "range_end": "bA==", "prev_kv": True, "start_revision": "7"}}
    ]
    assert (w.last_revision, w.streams) == (7, 2)
    w.close()
    with pytest.raises(WatchClosed):
        await w.next()


@pytest_twisted.ensureDeferred
async def test_a_watch_from_now_resumes_after_the_created_revision(streams) -> None:
    first, a = streams(created(9))
    second, b = streams(created(9), events(10, ("PUT", b"k", b"v")), hold=True)
    w = client(a, b).watch(b"k")
    event = await w.next()
    assert (event.revision, second.bodies[0]["create_request"]["start_revision"]) == (10, "10")
    assert "start_revision" not in first.bodies[0]["create_request"]
    w.close()


@pytest_twisted.ensureDeferred
async def test_a_compacted_resume_point_ends_the_watch_with_compacted(streams) -> None:
    first, a = streams(created(4), events(5, ("PUT", b"k", b"v")))
    cancel = {"result": {"header": {"revision": "20"}, "canceled": True, "compact_revision": "12"}}
    second, b = streams(cancel, hold=True)
    w = client(a, b).watch(b"k", start_revision=5)
    assert (await w.next()).revision == 5
    with pytest.raises(Compacted) as e:
        await w.next()
    assert e.value.compact_revision == 12
    assert second.bodies[0]["create_request"]["start_revision"] == "6"
    w.close()


@pytest_twisted.ensureDeferred
async def test_an_async_for_loop_ends_on_close_and_a_refusal_is_raised(streams) -> None:
    _, a = streams(created(1), events(2, ("PUT", b"k", b"1")), events(3, ("PUT", b"k", b"2")), hold=True)
    w = client(a).watch(b"k")
    values = []
    async for event in w:
        values.append(event.kv.value)
        if len(values) == 2:
            w.close()
    assert values == [b"1", b"2"]
    _, missing = streams({"error": "Not Found", "code": 5}, status=404)
    gone = client(missing).watch(b"k")
    with pytest.raises(NotFound):
        await gone.ready()
    with pytest.raises(NotFound):
        await gone.next()


def test_the_item_queue_hands_out_in_order_then_fails() -> None:
    queue: ItemQueue[int] = ItemQueue()
    waiting = queue.get()
    queue.put(1)
    queue.put(2)
    assert waiting.result == 1
    queue.fail(WatchClosed("done"))
    queue.put(3)  # after the end: ignored
    assert queue.get().result == 2
    failed = queue.get()
    assert isinstance(failed.result.value, WatchClosed)
    failed.addErrback(lambda _: None)
    cancelled = ItemQueue[int]().get()
    cancelled.cancel()
    cancelled.addErrback(lambda f: f.trap(defer.CancelledError))


@pytest_twisted.ensureDeferred
async def test_a_keep_alive_reads_the_first_line_of_a_stream_that_stays_open(streams) -> None:
    stub, a = streams({"result": {"header": {"revision": "3"}, "ID": "7", "TTL": "9"}}, hold=True)
    c = client(a)
    assert await c.keep_alive_once(7) == 9
    assert stub.bodies == [{"ID": "7"}]
    _, gone = streams({"result": {"header": {"revision": "3"}, "ID": "7"}})  # TTL omitted: 0, no such lease
    with pytest.raises(NotFound):
        await client(gone).keep_alive_once(7)


@pytest_twisted.ensureDeferred
async def test_a_no_leader_error_in_the_stream_moves_the_watch_on(streams) -> None:
    in_stream = {"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader", "http_status": "x"}}
    first, a = streams(created(3), in_stream, hold=True)
    second, b = streams(created(3), events(4, ("PUT", b"k", b"v")), hold=True)
    w = client(a, b).watch(b"k")
    assert (await w.next()).revision == 4
    assert second.bodies[0]["create_request"]["start_revision"] == "4"
    w.close()


def test_a_closed_queue_can_drop_what_was_not_read() -> None:
    queue: ItemQueue[int] = ItemQueue()
    queue.put(1)
    queue.fail(WatchClosed("closed"), drop=True)
    dropped = queue.get()
    assert isinstance(dropped.result.value, WatchClosed) and len(queue) == 0
    dropped.addErrback(lambda _: None)
