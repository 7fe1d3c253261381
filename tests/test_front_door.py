"""The front door (dkv.api.front_door) as a protocol: driven byte by byte
over a StringTransport with a fake node and a fake clock, plus one run
behind real TLS on loopback.

Pipelining (order, no recursion, one request at a time), backpressure
(pending answers, a full write buffer), limits (431, 413 before the body,
400), timeouts (idle, slow request, a client that reads nothing), the
connection limit, and the routes it serves itself (``routes.FastRoutes``).

Streaming answers (the test's route, ``tests.stream_route``) on each way of
serving them: the front door itself, the front door rendering Klein, and
the Klein site behind twisted.web's channel, which must write the same
bytes; and the front door's own bounds on a stream.

The front door and klein are imported inside the tests (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from dkv.config import Limits
from dkv.errors import InvalidArgument, KeyNotFound, Overloaded
from dkv.metrics import NodeMetrics
from tests.stream_route import CONTENT_TYPE, FAST_STREAM_PATH, STREAM_PATH, Streams, dechunk

MAX_BODY = 1024
MAX_KEY = 64


# -- a fake node, a connection, requests and answers ----------------------------------


@attrs.define
class FakeNode:
    """Keeps keys in a dict. With ``hold``, every answer waits in ``held``
    until ``release`` fires it (in order), as the cluster would."""

    limits: Limits = Limits(max_key_bytes=MAX_KEY, max_body_bytes=MAX_BODY)
    data: dict[bytes, bytes] = attrs.Factory(dict)
    hold: bool = False
    held: list[tuple[Deferred[Any], Any]] = attrs.Factory(list)
    calls: list[tuple[str, bytes]] = attrs.Factory(list)
    #: Results of held answers that were cancelled.
    cancelled: list[Any] = attrs.Factory(list)
    #: Where the front door counts requests (``dkv.metrics``).
    metrics: NodeMetrics = attrs.Factory(NodeMetrics)
    #: Set: admission control refuses writes with it (``check_write_admission``).
    overloaded: Overloaded | None = None
    #: Each put's ``admitted``: the front door checked admission just before.
    puts_admitted: list[bool] = attrs.Factory(list)

    def check_write_admission(self) -> None:
        if self.overloaded is not None:  # a new one each time, as admission control raises
            raise Overloaded(self.overloaded.message, reason=self.overloaded.reason)

    def _answer(self, result: Any) -> Deferred[Any]:
        if not self.hold:
            return fail(result) if isinstance(result, Exception) else succeed(result)
        d: Deferred[Any] = Deferred(lambda d: self.cancelled.append(result))
        self.held.append((d, result))
        return d

    def release(self) -> None:
        d, result = self.held.pop(0)
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)

    def put(self, key: bytes, value: bytes, *, admitted: bool = False) -> Deferred[None]:
        self.calls.append(("put", key))
        self.puts_admitted.append(admitted)
        self.data[key] = value
        return self._answer(None)

    def get(self, key: bytes, linearizable: bool = True) -> Deferred[bytes]:
        self.calls.append(("get", key))
        return self._answer(self.data[key] if key in self.data else KeyNotFound())

    def delete(self, key: bytes) -> Deferred[None]:
        self.calls.append(("delete", key))
        self.data.pop(key, None)
        return self._answer(None)

    def status(self) -> dict[str, Any]:
        return {"id": "a", "role": "leader"}


class BoundedTransport(StringTransport):
    """A transport whose write buffer holds ``bound`` bytes: beyond, it
    pauses its producer, as a socket's transport does; ``drain`` empties it
    and resumes the producer."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = bound
        self.written = b""
        self.full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.bound and not self.full and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 - Twisted name (twisted.web writes chunks so)
        self.write(b"".join(data))

    def drain(self) -> None:
        self.written += self.value()
        self.clear()
        if self.full:
            self.full = False
            self.producer.resumeProducing()


@attrs.define
class Conn:
    door: Any
    transport: StringTransport
    clock: Clock
    factory: Any
    node: FakeNode

    def send(self, data: bytes) -> None:
        self.door.dataReceived(data)

    def replies(self) -> list[Reply]:
        return parse(self.transport.value())

    @property
    def reading(self) -> bool:
        return self.transport.producerState == "producing"


def connect(
    node: FakeNode | None = None,
    transport: StringTransport | None = None,
    clock: Clock | None = None,
    routes: tuple | None = None,
    **settings: Any,
) -> Conn:
    """A front door connected to a StringTransport (serving routes, if
    given, instead of the product's table)."""
    from dkv.api.front_door import FrontDoorSettings, front_door
    from dkv.api.routes import ROUTES

    node = node or FakeNode()
    clock = clock or Clock()
    factory = front_door(node, clock, FrontDoorSettings(**settings), routes or ROUTES)  # type: ignore[arg-type]
    door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = transport or StringTransport()
    door.makeConnection(transport)
    return Conn(door, transport, clock, factory, node)


def request(
    method: bytes, target: bytes, body: bytes | None = None, headers: tuple = (), version: bytes = b"HTTP/1.1"
) -> bytes:
    lines = [b"%s %s %s" % (method, target, version), b"Host: test"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put(key: bytes, value: bytes, headers: tuple = ()) -> bytes:
    body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
    return request(b"POST", b"/v0/kv", body, ((b"Content-Type", b"application/json"), *headers))


def get(key: bytes, headers: tuple = ()) -> bytes:
    return request(b"GET", b"/v0/kv/key/" + base64.urlsafe_b64encode(key), headers=headers)


def delete(key: bytes) -> bytes:
    return request(b"DELETE", b"/v0/kv/key/" + base64.urlsafe_b64encode(key))


@attrs.frozen
class Reply:
    status: int
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def parse(data: bytes, head: bool = False) -> list[Reply]:
    """Every answer in data, interim ones (1xx) included; data must end with
    one. A chunked body is given as its chunks joined."""
    replies = []
    while data:
        end = data.index(b"\r\n\r\n")
        lines = data[:end].split(b"\r\n")
        version, status, _ = lines[0].split(b" ", 2)
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        reply = Reply(int(status), version, headers, b"")  # type: ignore[arg-type]
        if reply.header(b"Transfer-Encoding") == b"chunked" and not head:
            chunks, data = dechunk(data[end + 4 :])
            replies.append(attrs.evolve(reply, body=b"".join(chunks)))
            continue
        length = 0 if head or reply.status < 200 else int(reply.header(b"Content-Length") or 0)
        replies.append(attrs.evolve(reply, body=data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]
        assert len(replies[-1].body) == length, "truncated answer"
    return replies


@pytest.fixture
def api_log() -> Iterator[list[dict]]:
    """Events logged under dkv.api.rest (the namespace of both REST stacks)."""
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "dkv.api.rest":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


def refused(events: list[dict]) -> list[int]:
    """Statuses of the requests refused at the HTTP level, as logged."""
    return [e["status"] for e in events if str(e.get("log_format", "")).startswith("rejected HTTP request")]


def frames() -> int:
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


# -- pipelining -----------------------------------------------------------------------


def mixed_pipeline(n: int) -> tuple[list[bytes], list[tuple[int, Any]]]:
    """n requests cycling through put, get and delete on seven keys, and
    the answers they must get, in order."""
    requests, expected = [], []
    model: dict[bytes, bytes] = {}
    for i in range(n):
        key = b"k%d" % (i % 7)
        if i % 3 == 0:
            value = b"v%d" % i
            requests.append(put(key, value))
            model[key] = value
            expected.append((200, {}))
        elif i % 3 == 1:
            requests.append(get(key))
            if key in model:
                expected.append((200, {"key": b64(key), "value": b64(model[key])}))
            else:
                expected.append((404, {"error": "key not found", "code": 5}))
        else:
            requests.append(delete(key))
            model.pop(key, None)
            expected.append((200, {}))
    return requests, expected


def test_ten_thousand_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    """All in one read, every answer ready at once: a loop, not recursion
    (the stack may grow by at most a hundred frames)."""
    requests, expected = mixed_pipeline(10_000)
    c = connect()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames() + 100)
    try:
        c.send(b"".join(requests))
    finally:
        sys.setrecursionlimit(limit)
    assert [(r.status, r.json()) for r in c.replies()] == expected
    assert not c.transport.disconnecting
    assert c.reading


def test_writes_refused_by_admission_control_are_answered_429_before_their_body_is_parsed() -> None:
    """While the node refuses writes, a write route answers 429 with
    Retry-After in its own API's form without parsing its body (a malformed
    body too) or reaching the node; reads are served; once the node admits
    again, writes go through."""
    conn = connect()
    conn.node.overloaded = Overloaded("too many requests: the oldest write waited 90 ms", reason="queue_delay")
    etcd_put = request(b"POST", b"/v3/kv/put", b"{not json", ((b"Content-Type", b"application/json"),))
    conn.send(
        request(b"POST", b"/v0/kv", b"{not json")
        + delete(b"k")
        + etcd_put
        + request(b"POST", b"/v3/kv/deleterange", b"[]")
        + get(b"missing")
    )
    v0_put, v0_delete, etcd, etcd_delete, read = conn.replies()
    for reply in (v0_put, v0_delete, etcd, etcd_delete):
        assert reply.status == 429 and reply.header(b"Retry-After") == b"1"
    assert json.loads(v0_put.body) == {
        "error": "too many requests: the oldest write waited 90 ms",
        "code": 8,
        "reason": "queue_delay",
        "retry_after": 1,
    }
    assert json.loads(etcd.body) == {
        "error": "etcdserver: too many requests",
        "message": "etcdserver: too many requests",
        "code": 8,
    }
    assert read.status == 404
    assert conn.node.calls == [("get", b"missing")]
    conn.node.overloaded = None
    conn.transport.clear()
    conn.send(put(b"k", b"v"))
    assert [r.status for r in conn.replies()] == [200]
    assert conn.node.calls[-1] == ("put", b"k")
    # The check just made vouches for the put: it is not made again.
    assert conn.node.puts_admitted == [True]


def test_pipelined_requests_run_one_at_a_time_in_order() -> None:
    """Answers that come later, from the cluster: a request starts only once
    the one before it is answered (a GET after a PUT sees the PUT)."""
    requests, expected = mixed_pipeline(3000)
    node = FakeNode(hold=True)
    c = connect(node)
    c.send(b"".join(requests))
    released = 0
    while node.held:
        assert len(node.held) == 1  # never two at once
        assert len(node.calls) == released + 1
        node.release()
        released += 1
    assert released == 3000
    assert [(r.status, r.json()) for r in c.replies()] == expected


def test_requests_split_anywhere_across_reads() -> None:
    requests, expected = mixed_pipeline(30)
    data = b"".join(requests)
    c = connect()
    for i in range(0, len(data), 7):
        c.send(data[i : i + 7])
    assert [(r.status, r.json()) for r in c.replies()] == expected


# -- backpressure -----------------------------------------------------------------------


def test_reading_pauses_while_answers_are_pending() -> None:
    node = FakeNode(hold=True)
    c = connect(node, max_pending=4)
    c.send(b"".join(get(b"k%d" % i) for i in range(10)))
    assert not c.reading
    for pending in range(10, 3, -1):
        assert not c.reading, pending
        node.release()
    assert len(node.held) == 1 and c.reading  # 3 pending: one running, two read ahead
    while node.held:
        node.release()
    assert [r.status for r in c.replies()] == [404] * 10


def test_reading_pauses_while_the_write_buffer_is_full() -> None:
    """The transport pauses its producer (the front door) when its buffer is
    full: reading pauses and no further request starts; they run when the
    buffer drains."""
    node = FakeNode(data={b"big": b"x" * 900})
    transport = BoundedTransport(bound=16 * 1024)
    c = connect(node, transport=transport)
    c.send(get(b"big") * 200)  # ~1.3 KiB answers: 260 KiB in all
    assert not c.reading
    assert len(node.calls) < 200
    # Held back: at most the bound plus one write of answers.
    assert len(transport.value()) <= 16 * 1024 + 64 * 1024 + 2 * 1024
    rounds = 0
    while transport.full:
        transport.drain()
        rounds += 1
    transport.drain()
    assert rounds >= 3
    assert len(node.calls) == 200
    assert c.reading
    replies = parse(transport.written)
    assert [(r.status, r.json()["value"]) for r in replies] == [(200, b64(b"x" * 900))] * 200


# -- limits ------------------------------------------------------------------------------


def test_head_over_16_kib_in_one_read_is_431(api_log: list[dict]) -> None:
    c = connect()
    c.send(request(b"GET", b"/v0/status", headers=((b"X", b"a" * 17_000),)) + get(b"after"))
    [reply] = c.replies()
    assert (reply.status, reply.json()) == (431, {"error": "request line and headers exceed 16384 bytes", "code": 8})
    assert reply.header(b"Connection") == b"close"
    assert c.transport.disconnecting
    assert c.node.calls == []  # the request after it is not read
    assert refused(api_log) == [431]


@pytest.mark.parametrize("piece", [b"a" * 1000, b"X: a\r\n" * 100], ids=["endless header line", "endless header lines"])
def test_endless_head_is_431_after_a_bounded_read(piece: bytes, api_log: list[dict]) -> None:
    """Headers that never end, a little at a time: 431 once a bound is
    crossed, well before the bytes read reach 16 KiB plus one read."""
    c = connect()
    c.send(b"GET /v0/status HTTP/1.1\r\nX: ")
    sent = 0
    while not c.transport.value():
        c.send(piece)
        sent += len(piece)
        assert sent <= 20 * 1024
    [reply] = c.replies()
    assert reply.status == 431 and reply.json()["code"] == 8
    assert c.transport.disconnecting
    assert refused(api_log) == [431]


def test_more_than_500_header_fields_is_431() -> None:
    c = connect()
    c.send(request(b"GET", b"/v0/status", headers=((b"X", b"a"),) * 501))
    [reply] = c.replies()
    assert (reply.status, reply.json()) == (431, {"error": "more than 500 header fields", "code": 8})


def test_declared_body_over_the_limit_is_413_before_it_is_read(api_log: list[dict]) -> None:
    """413 as soon as the headers arrive; the body is then read and dropped,
    and the connection serves the next request."""
    c = connect()
    c.send(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 * MAX_BODY))
    [reply] = c.replies()
    assert (reply.status, reply.json()) == (413, {"error": f"body exceeds {MAX_BODY} bytes", "code": 8})
    assert reply.header(b"Connection") is None
    c.transport.clear()
    for _ in range(4):
        c.send(b"y" * MAX_BODY)
    assert c.transport.value() == b""
    c.send(put(b"k", b"v"))
    assert [(r.status, r.json()) for r in c.replies()] == [(200, {})]
    assert c.node.data == {b"k": b"v"}
    assert [e["status"] for e in api_log] == [413]


def test_chunked_body_over_the_limit_is_413_once_it_crosses_it() -> None:
    c = connect()
    c.send(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(MAX_BODY // 100):
        c.send(b"64\r\n" + b"z" * 100 + b"\r\n")
    assert c.transport.value() == b""
    c.send(b"64\r\n" + b"z" * 100 + b"\r\n")
    assert [r.status for r in c.replies()] == [413]
    c.send(b"64\r\n" + b"z" * 100 + b"\r\n0\r\n\r\n" + get(b"k"))
    assert [r.status for r in c.replies()] == [413, 404]
    assert c.node.calls == [("get", b"k")]


def test_body_over_the_limit_with_expect_continue_closes_without_reading_it() -> None:
    c = connect()
    c.send(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    [reply] = c.replies()  # no "100 Continue"
    assert reply.status == 413
    assert reply.header(b"Connection") == b"close"
    assert c.transport.disconnecting


def test_expect_continue_gets_the_interim_answer_first() -> None:
    c = connect()
    body = json.dumps({"key": b64(b"k"), "value": b64(b"v")}).encode()
    c.send(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert c.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.send(body)
    assert [r.status for r in c.replies()] == [100, 200]


MALFORMED = {
    "header name with a space": b"GET /v0/status HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "HTTP/2.0": b"GET /v0/status HTTP/2.0\r\n\r\n",
    "no version (HTTP/0.9)": b"GET /v0/status\r\n\r\n",
    "binary garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "content-length not a number": b"POST /v0/kv HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
    "unknown transfer-encoding": b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "bare LF": b"GET /v0/status HTTP/1.1\nHost: x\n\n",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_400_after_the_answers_before_it(case: str, api_log: list[dict]) -> None:
    c = connect()
    c.send(put(b"k", b"v") + MALFORMED[case] + put(b"after", b"x"))
    replies = c.replies()
    assert [(r.status, r.json()) for r in replies] == [
        (200, {}),
        (400, {"error": "malformed HTTP request", "code": 3}),
    ]
    assert replies[1].header(b"Connection") == b"close"
    assert c.transport.disconnecting
    assert c.node.data == {b"k": b"v"}
    assert refused(api_log) == [400]


def test_http_1_0_is_answered_in_kind_and_closed() -> None:
    c = connect()
    c.send(request(b"GET", b"/v0/kv/key/aw==", version=b"HTTP/1.0") + get(b"k"))
    [reply] = c.replies()
    assert (reply.version, reply.status, reply.header(b"Connection")) == (b"HTTP/1.0", 404, None)
    assert c.transport.disconnecting
    assert c.node.calls == [("get", b"k")]  # once: the request after it is dropped


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close", b"close,TE"])
def test_connection_close(value: bytes) -> None:
    c = connect()
    c.send(get(b"k", headers=((b"Connection", value),)) + get(b"k"))
    [reply] = c.replies()
    assert reply.header(b"Connection") == b"close"
    assert c.transport.disconnecting
    assert len(c.node.calls) == 1


def test_other_routes_are_rendered_by_klein_on_the_same_connection() -> None:
    """Status, 404, 405 (with Allow), OPTIONS * and HEAD come from the Klein
    app, in order with the fast routes, with no change of protocol."""
    c = connect()
    c.send(
        put(b"k", b"v")
        + request(b"GET", b"/v0/status")
        + request(b"GET", b"/nowhere")
        + request(b"PUT", b"/v0/kv", b"{}")
        + request(b"OPTIONS", b"*")
        + get(b"k")
    )
    replies = c.replies()
    assert [r.status for r in replies] == [200, 200, 404, 405, 200, 200]
    assert replies[1].json() == {"id": "a", "role": "leader"}
    assert replies[2].json() == {"error": "no route /nowhere", "code": 5}
    assert replies[3].header(b"Allow") is not None and b"POST" in replies[3].header(b"Allow")
    assert replies[4].body == b""
    c.transport.clear()
    c.send(request(b"HEAD", b"/v0/status"))
    [head] = parse(c.transport.value(), head=True)
    assert head.status == 200 and int(head.header(b"Content-Length") or -1) == len(replies[1].body)
    assert c.door.transport is c.transport and not c.transport.disconnecting


def test_answers_carry_server_and_date_like_twisted_web() -> None:
    clock = Clock()
    clock.advance(86400 * 365 * 50)
    c = connect(clock=clock)
    c.send(get(b"k"))
    [reply] = c.replies()
    names = [n for n, _ in reply.headers]
    assert names == [b"Server", b"Date", b"Content-Type", b"Content-Length"]
    assert reply.header(b"Date").endswith(b" GMT")


# -- timeouts ----------------------------------------------------------------------------


def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    c = connect(idle_timeout=60, read_timeout=30)
    c.clock.advance(59.9)
    assert not c.transport.disconnecting
    c.clock.advance(0.2)
    assert c.transport.disconnecting
    assert c.transport.value() == b""


def test_idle_timeout_counts_from_the_last_answer() -> None:
    c = connect(idle_timeout=60, read_timeout=30)
    c.clock.advance(50)
    c.send(get(b"k"))
    c.clock.advance(59)
    assert not c.transport.disconnecting
    c.clock.advance(1.1)
    assert c.transport.disconnecting


def test_a_request_dribbled_one_byte_a_second_gets_408(api_log: list[dict]) -> None:
    c = connect(idle_timeout=60, read_timeout=30)
    data = put(b"k", b"v" * 200)
    for i in range(29):
        c.send(data[i : i + 1])
        c.clock.advance(1)
    assert c.transport.value() == b""
    c.send(data[29:30])
    c.clock.advance(1)
    [reply] = c.replies()
    assert (reply.status, reply.json()) == (408, {"error": "request not received within 30 s", "code": 4})
    assert c.transport.disconnecting
    assert c.node.calls == []
    assert refused(api_log) == [408]


def test_dropping_an_endless_body_ends_at_the_read_timeout() -> None:
    c = connect(idle_timeout=60, read_timeout=30)
    c.send(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999999\r\n\r\n")
    assert [r.status for r in c.replies()] == [413]
    for _ in range(29):
        c.send(b"x" * 65536)
        c.clock.advance(1)
    assert not c.transport.disconnecting
    c.clock.advance(1.1)
    assert c.transport.disconnecting
    assert [r.status for r in c.replies()] == [413]  # nothing more


def test_waiting_for_the_cluster_is_not_idling() -> None:
    node = FakeNode(hold=True)
    c = connect(node, idle_timeout=60, read_timeout=30)
    c.send(put(b"k", b"v"))
    c.clock.advance(600)
    assert not c.transport.disconnecting
    node.release()
    assert [r.status for r in c.replies()] == [200]
    c.clock.advance(60.1)
    assert c.transport.disconnecting


def test_read_timeout_does_not_count_while_reading_is_paused_by_the_node() -> None:
    """A request half read when reading paused for pending answers: its time
    runs again from when reading resumes."""
    node = FakeNode(hold=True)
    c = connect(node, idle_timeout=60, read_timeout=30, max_pending=2)
    c.send(put(b"k", b"v") + b"GET /v0/kv/key/aw== HT")
    assert not c.reading
    c.clock.advance(100)
    assert not c.transport.disconnecting
    node.release()
    assert c.reading
    c.clock.advance(29)
    assert [r.status for r in c.replies()] == [200]
    c.clock.advance(1.1)
    assert [r.status for r in c.replies()] == [200, 408]


def test_a_client_that_reads_no_answer_is_aborted_after_the_idle_timeout(api_log: list[dict]) -> None:
    c = connect(idle_timeout=60, read_timeout=30)
    c.send(get(b"k"))
    c.door.pauseProducing()  # what the transport does when its buffer is full
    c.clock.advance(60.1)
    assert c.transport.disconnected  # aborted: nothing more will be read by that client
    assert any("read no answer" in str(e.get("log_format")) for e in api_log)


# -- the connection ---------------------------------------------------------------------


def test_connection_lost_cancels_what_the_requests_wait_for() -> None:
    node = FakeNode(hold=True)
    c = connect(node)
    c.send(put(b"k", b"v"))
    [(d, _)] = node.held
    c.door.connectionLost()
    assert node.cancelled == [None] and d.called
    assert d.result is None  # the CancelledError was consumed, not left unhandled
    assert c.transport.value() == b""


def test_stopping_closes_idle_connections_now_and_busy_ones_after_their_answers() -> None:
    from dkv.api.front_door import FrontDoorSettings, front_door

    node = FakeNode(hold=True)
    clock = Clock()
    factory = front_door(node, clock, FrontDoorSettings())  # type: ignore[arg-type]
    idle, busy = StringTransport(), StringTransport()
    factory.buildProtocol(None).makeConnection(idle)
    door = factory.buildProtocol(None)
    door.makeConnection(busy)
    door.dataReceived(put(b"k", b"v"))
    factory.doStart()
    factory.doStop()
    assert idle.disconnecting and not busy.disconnecting
    node.release()
    assert [r.status for r in parse(busy.value())] == [200]
    assert busy.disconnecting


def test_connections_over_the_limit_are_refused_and_logged_once_per_burst(api_log: list[dict]) -> None:
    from dkv.api.front_door import FrontDoorSettings, front_door

    factory = front_door(FakeNode(), Clock(), FrontDoorSettings(max_connections=2))  # type: ignore[arg-type]
    doors = []
    for _ in range(2):
        door = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        door.makeConnection(StringTransport())
        doors.append(door)
    assert [factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2)) for _ in range(5)] == [None] * 5
    doors[0].connectionLost()
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3)) is not None
    lines = [e["log_format"] for e in api_log]
    assert len(lines) == 2 and lines[0].startswith("refusing") and lines[1].startswith("accepting")
    assert api_log[1]["count"] == 5


# -- the routes the front door serves itself ----------------------------------------------


def test_fast_routes_match_as_klein_does() -> None:
    from dkv.api.routes import ROUTES, FastRoutes

    fast = FastRoutes(ROUTES)
    route, params = fast.match(b"POST", b"/v0/kv")  # type: ignore[misc]
    assert (route.name, params) == ("put", {})
    route, params = fast.match(b"GET", b"/v0/kv/key/%2F%2F%2F%2F")  # type: ignore[misc]
    assert (route.name, params) == ("get", {"b64key": "////"})
    route, params = fast.match(b"DELETE", b"/v0/kv/key///QQ==")  # type: ignore[misc]
    assert (route.name, params) == ("delete", {"b64key": "//QQ=="})
    for method, path in [
        (b"GET", b"/v0/kv/key/"),  # the empty key: Klein's own route
        (b"PUT", b"/v0/kv/key/QQ=="),  # 405, from Klein
        (b"HEAD", b"/v0/kv/key/QQ=="),
        (b"GET", b"/v0/status"),  # not fast
        (b"POST", b"/v0/kv/"),
        (b"GET", b"/v0/kv/%6Bey/QQ=="),  # escaped: Klein decides
    ]:
        assert fast.match(method, path) is None, (method, path)
    with pytest.raises(InvalidArgument, match="path is not valid UTF-8"):
        fast.match(b"GET", b"/v0/kv/key/QQ%FF")


def test_a_fast_route_must_be_literal_or_end_in_the_rest_of_the_path() -> None:
    from dkv.api.routes import FastRoutes, Route, status

    with pytest.raises(ValueError, match="fast route"):
        FastRoutes([Route("x", ("GET",), "/v0/members/<node_id>/promote", status, fast=True)])
    FastRoutes([Route("x", ("GET",), "/v0/members/<node_id>", status)])  # not fast: fine


# -- streaming answers (tests.stream_route), on both stacks ------------------------------------

#: How a streaming answer is served: by the front door itself (a fast
#: route), by the front door rendering Klein in-process, and by the Klein
#: site behind twisted.web's own channel.
STREAM_STACKS = ("front door", "front door via klein", "klein")


@attrs.define
class StreamConn(Conn):
    """A connection serving the test's streaming routes; ``door`` is
    twisted.web's channel on the Klein site."""

    streams: Streams
    path: bytes

    def get(
        self, query: bytes = b"", version: bytes = b"HTTP/1.1", method: bytes = b"GET", headers: tuple = ()
    ) -> None:
        self.send(request(method, self.path + query, version=version, headers=headers))

    def value(self) -> bytes:
        """What was written, Date apart."""
        return re.sub(rb"\r\nDate: [^\r]*", b"", self.transport.value())

    def lose(self) -> None:
        """What a TCP transport does when its client goes away."""
        if self.transport.producer is not None:
            self.transport.producer.stopProducing()
        self.door.connectionLost(Failure(ConnectionDone()))


def stream_conn(stack: str, transport: StringTransport | None = None, **settings: Any) -> StreamConn:
    """A connection to stack (one of STREAM_STACKS) serving the test's
    streaming routes, on a fake clock."""
    clock = Clock()
    clock.advance(86400 * 365 * 50)
    streams = Streams(clock)
    node = FakeNode()
    transport = transport or StringTransport()
    path = FAST_STREAM_PATH if stack == "front door" else STREAM_PATH
    if stack == "klein":
        from dkv.api.rest import RestApi

        site = RestApi(node, streams.routes()).site()  # type: ignore[arg-type]
        site.reactor = clock
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        channel.makeConnection(transport)
        return StreamConn(channel, transport, clock, site, node, streams, path)
    c = connect(node, transport, clock, routes=streams.routes(), **settings)
    return StreamConn(c.door, transport, clock, c.factory, node, streams, path)


def stream_head(version: bytes = b"HTTP/1.1", chunked: bool = True, close: bool = False) -> bytes:
    """The head of the test route's answer, Date apart."""
    from twisted.web.server import version as server

    return b"%s 200 OK\r\n%sServer: %s\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n%s\r\n" % (
        version,
        b"Connection: close\r\n" if close else b"",
        server,
        CONTENT_TYPE,
        b"Transfer-Encoding: chunked\r\n" if chunked else b"",
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
streaming = pytest.mark.parametrize("stack", STREAM_STACKS)


@streaming
def test_stream_is_chunked_as_it_is_written(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=3&every=1")
    assert c.value() == stream_head() + chunk(b"event 0\n")
    c.clock.advance(1)
    assert c.value() == stream_head() + chunk(b"event 0\n") + chunk(b"event 1\n")
    c.clock.advance(1)
    assert c.value() == stream_head() + b"".join(chunk(b"event %d\n" % i) for i in range(3)) + LAST_CHUNK
    assert c.streams.stops == 0
    assert not c.transport.disconnecting


@streaming
def test_requests_pipelined_around_a_stream_are_answered_in_order(stack: str) -> None:
    """The request before the stream is answered first; those after it run
    once it has finished."""
    c = stream_conn(stack)
    c.send(get(b"k") + request(b"GET", c.path + b"?n=2&every=5") + request(b"GET", b"/v0/status") + get(b"k"))
    before = parse(c.transport.value()[: c.transport.value().index(b"HTTP/1.1 200")])
    assert [r.status for r in before] == [404]
    assert c.value().endswith(stream_head() + chunk(b"event 0\n"))
    c.clock.advance(4.9)
    assert c.value().endswith(chunk(b"event 0\n"))  # nothing else yet
    c.clock.advance(0.1)
    replies = parse(c.transport.value())
    assert [(r.status, r.body) for r in replies] == [
        (404, replies[0].body),
        (200, b"event 0\nevent 1\n"),
        (200, b'{"id":"a","role":"leader"}'),
        (404, replies[0].body),
    ]


@pytest.mark.parametrize("stack", ["front door", "front door via klein"])
@pytest.mark.parametrize("later", [b"", b"&later=5"])
def test_a_stream_is_counted_once_with_its_status_when_it_ends(stack: str, later: bytes) -> None:
    c = stream_conn(stack)
    c.get(b"?n=10&every=1" + later)
    c.clock.advance(3)
    meter = c.node.metrics.http
    route = "test_fast_stream" if stack == "front door" else "test_stream"
    assert meter.count(("other", route), "200") == 0  # not answered yet, or still streaming
    for _ in range(20):
        c.clock.advance(1)
    assert c.value().endswith(LAST_CHUNK)
    assert meter.count(("other", route), "200") == 1


@streaming
def test_stream_that_ends_at_once_lets_the_next_request_run(stack: str) -> None:
    c = stream_conn(stack)
    c.send(request(b"GET", c.path + b"?n=0") + request(b"GET", b"/v0/status"))
    assert c.value().startswith(stream_head() + LAST_CHUNK)
    assert [r.status for r in parse(c.transport.value())] == [200, 200]


@streaming
def test_stream_answered_later_starts_then(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=2&later=5")
    c.clock.advance(4.9)
    assert c.transport.value() == b"" and c.streams.sinks == []
    c.clock.advance(0.1)
    assert c.value() == stream_head() + chunk(b"event 0\n")
    c.clock.advance(1)
    assert c.value() == stream_head() + chunk(b"event 0\n") + chunk(b"event 1\n") + LAST_CHUNK


@streaming
def test_stream_stops_once_when_the_client_goes_away(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=10")
    c.clock.advance(1)
    [sink] = c.streams.sinks
    c.lose()
    assert c.streams.stops == 1
    written = c.transport.value()
    c.clock.advance(100)
    assert c.transport.value() == written
    assert not sink.writable
    sink.write(b"ignored")
    sink.finish()
    assert not sink.when_writable().called
    assert c.transport.value() == written
    assert c.streams.stops == 1


@streaming
def test_stream_that_finished_is_not_stopped(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=1")
    assert c.value().endswith(LAST_CHUNK)
    c.lose()
    assert c.streams.stops == 0


@streaming
def test_stream_waits_for_a_client_that_reads_slowly(stack: str) -> None:
    """The sink is not writable while the transport's buffer is over its
    bound, and when_writable fires as it drains: the stream's producer
    never makes the connection hold much more than the bound."""
    transport = BoundedTransport(bound=16 * 1024)
    c = stream_conn(stack, transport=transport)
    c.get(b"?mode=flood&n=200&size=1000")
    [sink] = c.streams.sinks
    assert transport.full and not sink.writable and not sink.when_writable().called
    rounds = 0
    while transport.full:
        assert len(transport.value()) <= 16 * 1024 + 1000 + 1024
        assert not transport.value().endswith(LAST_CHUNK)
        transport.drain()
        rounds += 1
    transport.drain()
    assert rounds >= 10 and c.streams.waits >= rounds  # (via Klein, one more: paused until its turn)
    [reply] = parse(transport.written)
    assert reply.body == b"".join(bytes([97 + i % 26]) * 1000 for i in range(200))
    assert c.streams.stops == 0
    assert sink.when_writable().called is False  # finished: never again


@streaming
def test_stream_over_http_1_0_is_not_chunked_and_closes_at_its_end(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=2", version=b"HTTP/1.0")
    assert c.value() == stream_head(b"HTTP/1.0", chunked=False) + b"event 0\n"
    assert not c.transport.disconnecting
    c.clock.advance(1)
    assert c.value() == stream_head(b"HTTP/1.0", chunked=False) + b"event 0\nevent 1\n"
    assert c.transport.disconnecting


@streaming
def test_stream_asked_to_close_says_so_and_closes_at_its_end(stack: str) -> None:
    c = stream_conn(stack)
    c.get(b"?n=2", headers=((b"Connection", b"close"),))
    c.clock.advance(1)
    assert c.value() == stream_head(close=True) + chunk(b"event 0\n") + chunk(b"event 1\n") + LAST_CHUNK
    assert c.transport.disconnecting


@streaming
def test_head_of_a_stream_is_the_head_alone(stack: str) -> None:
    c = stream_conn(stack)
    c.send(request(b"HEAD", c.path + b"?n=2") + request(b"GET", b"/v0/status"))
    assert c.value().startswith(stream_head(chunked=False) + b"HTTP/1.1 200 OK\r\n")
    assert c.streams.sinks == []  # never started
    assert not c.transport.disconnecting


@streaming
def test_stream_whose_producer_fails_to_start_ends_and_is_logged(stack: str, api_log: list[dict]) -> None:
    c = stream_conn(stack)
    c.send(request(b"GET", c.path + b"?mode=fail") + request(b"GET", b"/v0/status"))
    assert c.value().startswith(stream_head() + LAST_CHUNK + b"HTTP/1.1 200 OK\r\n")
    [failure] = [e["log_failure"] for e in api_log if "log_failure" in e]
    assert failure.check(RuntimeError)


def test_stacks_stream_byte_for_byte_alike() -> None:
    """Each case on each stack, the clock run to its end: the same bytes,
    Date apart."""
    cases = {
        "chunked": (b"GET", b"?n=3", b"HTTP/1.1", ()),
        "HTTP/1.0": (b"GET", b"?n=3", b"HTTP/1.0", ()),
        "close": (b"GET", b"?n=3", b"HTTP/1.1", ((b"Connection", b"close"),)),
        "later": (b"GET", b"?n=2&later=3", b"HTTP/1.1", ()),
        "empty": (b"GET", b"?n=0", b"HTTP/1.1", ()),
        "chunks of 0x1a bytes": (b"GET", b"?mode=flood&n=3&size=26", b"HTTP/1.1", ()),
        "HEAD": (b"HEAD", b"?n=3", b"HTTP/1.1", ()),
    }
    for case, (method, query, version, headers) in cases.items():
        written = {}
        for stack in STREAM_STACKS:
            c = stream_conn(stack)
            c.get(query, version, method, headers)
            c.clock.advance(10)
            written[stack] = c.value()
        assert len(set(written.values())) == 1, (case, written)


# -- streaming: the front door's own bounds ------------------------------------------------

front_door_streaming = pytest.mark.parametrize("stack", STREAM_STACKS[:2])


@front_door_streaming
def test_a_live_stream_is_not_idle(stack: str) -> None:
    c = stream_conn(stack, idle_timeout=60, read_timeout=30)
    c.get(b"?n=3&every=100")
    c.clock.advance(100)
    c.clock.advance(99)
    assert not c.transport.disconnecting
    c.clock.advance(1)
    assert c.value().endswith(LAST_CHUNK)
    c.clock.advance(59)
    assert not c.transport.disconnecting
    c.clock.advance(1.1)
    assert c.transport.disconnecting  # idle once it ended


@front_door_streaming
def test_reading_goes_on_while_a_stream_lasts_so_a_client_that_closes_is_seen(stack: str) -> None:
    """Even after the connection's last request (HTTP/1.0)."""
    c = stream_conn(stack)
    c.get(b"?n=2", version=b"HTTP/1.0")
    assert c.reading
    c.send(b"bytes after the last request are dropped")
    c.clock.advance(1)
    assert c.transport.disconnecting


@front_door_streaming
def test_a_client_that_reads_nothing_of_a_stream_is_aborted(stack: str, api_log: list[dict]) -> None:
    transport = BoundedTransport(bound=16 * 1024)
    c = stream_conn(stack, transport=transport, idle_timeout=60, read_timeout=30)
    c.get(b"?mode=flood&n=1000&size=1000")
    assert transport.full
    c.clock.advance(59)
    assert not transport.disconnected and c.streams.stops == 0
    c.clock.advance(1.1)
    assert transport.disconnected  # aborted
    assert c.streams.stops == 1
    assert any("read no answer" in str(e.get("log_format")) for e in api_log)
    c.lose()  # the transport reports it
    assert c.streams.stops == 1


@front_door_streaming
def test_stopping_the_node_ends_a_live_stream(stack: str) -> None:
    """The producer stops, the answer ends with its last chunk, and the
    connection closes after the requests pipelined behind it."""
    c = stream_conn(stack)
    c.send(request(b"GET", c.path + b"?n=10") + get(b"k"))
    c.factory.doStart()
    c.factory.doStop()
    assert c.streams.stops == 1
    replies = parse(c.transport.value())
    assert [(r.status, r.body) for r in replies[:1]] == [(200, b"event 0\n")]
    assert [r.status for r in replies] == [200, 404]
    assert c.transport.disconnecting
    c.clock.advance(10)
    assert len(parse(c.transport.value())) == 2


def test_a_streaming_answer_needs_a_status_with_a_body() -> None:
    from dkv.api.http_common import StreamAnswer

    for status in (101, 204, 304):
        with pytest.raises(ValueError, match="status"):
            StreamAnswer(status, b"text/plain", lambda sink: lambda: None)


# -- behind TLS -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Twisted's certificate helpers use pyOpenSSL's X509
@pytest_twisted.ensureDeferred
async def test_serves_pipelined_requests_behind_tls() -> None:
    """The same protocol behind Twisted's TLS: pipelined fast and Klein
    routes, in order, on one connection."""
    from twisted.internet import defer, protocol, reactor, ssl

    from dkv.api.front_door import FrontDoorSettings, front_door

    key = ssl.KeyPair.generate(size=2048)
    cert = key.selfSignedCert(1, commonName="localhost")
    port = reactor.listenSSL(
        0,
        front_door(FakeNode(Limits(max_body_bytes=64 * 1024)), reactor, FrontDoorSettings()),  # type: ignore[arg-type]
        cert.options(),
        interface="127.0.0.1",
    )

    class Client(protocol.Protocol):
        def __init__(self) -> None:
            self.received = b""
            self.done: Deferred[bytes] = Deferred()

        def connectionMade(self) -> None:  # noqa: N802
            self.transport.write(
                put(b"k", b"v" * 5000)
                + get(b"k")
                + request(b"GET", b"/v0/status")
                + delete(b"k")
                + get(b"k", headers=((b"Connection", b"close"),))
            )

        def dataReceived(self, data: bytes) -> None:  # noqa: N802
            self.received += data

        def connectionLost(self, reason: object = None) -> None:  # noqa: N802
            self.done.callback(self.received)

    client = Client()
    try:
        factory = protocol.ClientFactory.forProtocol(lambda: client)
        reactor.connectSSL("127.0.0.1", port.getHost().port, factory, ssl.CertificateOptions())
        received = await client.done.addTimeout(10, reactor)
    finally:
        await defer.maybeDeferred(port.stopListening)
    assert [(r.status, r.json()) for r in parse(received)] == [
        (200, {}),
        (200, {"key": b64(b"k"), "value": b64(b"v" * 5000)}),
        (200, {"id": "a", "role": "leader"}),
        (200, {}),
        (404, {"error": "key not found", "code": 5}),
    ]
