# test-case-name: tests.test_front_door,tests.test_front_door_process,tests.test_rest
"""The front door: the protocol that serves the REST port.

Requests are parsed by llhttp (through ``httptools``); nothing here reads
HTTP syntax by hand. Each request takes its place in the connection's queue
of exchanges, and answers leave in that order:

- a request for a route the table marks fast (``dkv.api.routes``: the
  key-value routes) is answered by calling that route's handler here;
- any other request is rendered in-process by the Klein app of
  ``dkv.api.rest`` — the home of the full API — through a twisted.web
  ``Request`` whose channel writes into the exchange's answer
  (``dkv.api.klein_channel``).

So every route answers as the Klein stack does (``RestApi.site()``), byte
for byte apart from ``Date``.

A handler may answer a ``StreamAnswer`` (``dkv.api.http_common``), whose
body comes over time; a Klein-rendered request that streams is relayed the
same way (``klein_channel``). When it reaches the head of the queue its
head is written (``Transfer-Encoding: chunked`` on HTTP/1.1; on HTTP/1.0 no
length, and the connection closes at its end), then each chunk as it is
written, straight to the transport; it holds the queue until it finishes,
so requests pipelined behind it run after it. While the transport's write
buffer is full the stream is paused (its sink is not ``writable``), and
resumed when it drains. Its producer is stopped once, when the client goes
away, when the connection is aborted because its client read nothing for
``idle_timeout`` seconds, or when the node stops (the answer then ends with
its last chunk and the connection closes). A live stream is not idle, and
reading goes on while it lasts (bytes after a last request are dropped), so
that a client that closes is noticed.

Requests on one connection are executed one after the other, as twisted.web
does (a pipelined GET after a POST sees the POST's effect, RFC 9112 §9.3.2),
by a loop, never by recursion, however many arrive in one read.

Bounds, so that one connection cannot make the node buffer without limit:

- reading pauses while ``max_pending`` requests are read ahead of their
  answers, and while the transport's write buffer is full (the protocol is
  the transport's streaming producer); no further request starts then;
- request line and headers over 16 KiB, or more than 500 header fields:
  431; a body over ``--max-body-size``: 413 as soon as its length is known,
  before it is read (the rest of the body is read and dropped, so the
  connection stays in step; with ``Expect: 100-continue`` it closes
  instead); a request llhttp cannot parse, or of an HTTP version other than
  1.0 and 1.1: 400. 400 and 431 close the connection;
- a request must arrive in full within ``read_timeout`` seconds of its first
  byte (408, then close), a connection with nothing to do is closed after
  ``idle_timeout`` seconds, and one whose client reads none of its answers
  for ``idle_timeout`` seconds is aborted;
- the factory refuses connections beyond ``max_connections`` (logged once
  per burst).

Every answered request is counted once in the node's request metrics
(``dkv.api.http_metrics``), when its answer's last byte is handed to the
transport: a few dict operations, for fast and Klein-rendered requests
alike.

The protocol only writes to its transport, pauses and resumes it, and
registers itself as its producer, so it works as well behind Twisted's TLS.

Where llhttp reads HTTP syntax differently from twisted.web, the answers
differ (``tests/test_rest.py`` compares the two stacks on every other
request): methods llhttp does not know (``BREW``, lowercase ``get``),
``Transfer-Encoding: identity``, folded header lines and bytes 0x7F-0xB0 in
the target get a 400 here; extra spaces between the request line's parts
are accepted here. A body over the limit is answered before it is read
(twisted.web reads it first), and with ``Expect: 100-continue`` without the
interim answer, closing the connection.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, datetimeToString, parse_qs
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from twisted.web.server import version as server_version
from zope.interface import implementer

from dkv.api import klein_channel
from dkv.api.http_common import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    RETRY_AFTER_HEADER,
    RawAnswer,
    StreamAnswer,
    StreamSinkBase,
    call_handler,
    closing_answer,
    encode_json,
    error_body,
    log,
    log_refused_request,
    log_rejection,
    wants_close,
)
from dkv.api.http_metrics import HttpMeter
from dkv.api.rest import RestApi
from dkv.api.routes import ROUTES, Call, FastRoutes, Route
from dkv.errors import DkvError, HeadersTooLarge, InvalidArgument, Overloaded, RequestTimeout, TooLarge
from dkv.node import Node
from dkv.write_now import write_now

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Lengths of the header names the front door reads (content-length,
#: connection, expect, content-type, idempotency-key, authorization); others are only passed on.
_NOTED_LENGTHS = frozenset({14, 10, 6, 12, 15, 13})
_EMPTY = b"{}"
_JSON = b"application/json"
#: Answers are handed to the transport in pieces of about this size, so that
#: its producer callback can stop further requests from starting.
_WRITE_CHUNK = 64 * 1024


@attrs.frozen
class FrontDoorSettings:
    """The bounds of the REST port (flags ``--max-connections``,
    ``--idle-timeout`` and ``--read-timeout``)."""

    max_connections: int = 10_000
    #: Seconds a connection may stay open with nothing to do.
    idle_timeout: float = 60.0
    #: Seconds a request may take to arrive, from its first byte to its last.
    read_timeout: float = 30.0
    #: Requests read ahead of their answers on one connection before reading pauses.
    max_pending: int = 64
    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS


class _RefuseError(Exception):
    """Raised in a parser callback: the request is refused with ``error``
    and the connection reads no more."""

    def __init__(self, error: DkvError) -> None:
        super().__init__(error.message)
        self.error = error


class _IgnoreError(Exception):
    """Raised in a parser callback: bytes after the last request the
    connection reads; dropped."""


class _Exchange:
    """One request and, once known, its answer: a place in the queue.
    (Class attributes are the defaults; an instance sets what changes.)"""

    method = b""
    url = b""
    version = b"HTTP/1.1"
    head_bytes = 0
    body_bytes = 0
    #: All of it arrived.
    complete = False
    #: The connection closes after this answer; the answer says so if close_header.
    close = False
    close_header = False
    #: Rendered by Klein even when its route is fast (multipart bodies: twisted.web parses them).
    klein_only = False
    expect_continue = False
    #: Answered before its body arrived (too large): the rest of the body is dropped.
    discard = False
    started = False
    answer: bytes | None = None
    #: An answer whose bytes come over time, until it is complete (then ``answer`` is set).
    stream: _Outflow | None = None
    deferred: Deferred[Any] | None = None
    request: Any = None
    #: The first ``Idempotency-Key`` header, raw.
    idempotency_key: bytes | None = None
    #: The first ``Authorization`` header, raw.
    authorization: bytes | None = None
    #: When its first byte arrived (clock seconds), for the request metrics.
    started_at = 0.0
    #: The fast route that serves it (None: Klein, or not routed).
    route: Route | None = None
    #: The answer's status, when the front door wrote it (or a streamed
    #: answer's, known when its head went out); 0: read from the answer.
    status = 0

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: Any = []  # chunks while arriving, then bytes


class _Outflow:
    """An answer whose bytes come over time: held until it reaches the head
    of its connection's queue (``go_live``), then written through as they
    come; ``_complete`` lets its exchange leave the queue. The front door
    pauses, resumes and stops the live one as the connection fills, drains
    and goes away, and halts it when the node stops."""

    live = False

    def __init__(self, door: FrontDoor, ex: _Exchange) -> None:
        self._door = door
        self._ex = ex
        self._held: list[bytes] = []

    def _emit(self, data: bytes) -> None:
        if self.live:
            write_now(self._door.transport, data)
        else:
            self._held.append(data)

    def go_live(self) -> bytes:
        """What was held (written by the caller); from now on bytes are
        written through."""
        self.live = True
        held, self._held = b"".join(self._held), []
        return held

    def _complete(self) -> None:
        ex = self._ex
        ex.answer = b"" if self.live else b"".join(self._held)
        ex.stream = ex.request = None
        self._door._stream_complete(self)

    def begin(self) -> None:
        """Live now: the producer may start."""

    def pause(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def gone(self) -> None:
        """The client went away: stop the producer."""
        raise NotImplementedError

    def halt(self) -> None:
        """The node stops: stop the producer and end the answer."""
        raise NotImplementedError


class _Stream(StreamSinkBase, _Outflow):
    """The sink of a route's ``StreamAnswer``, served by the front door."""

    def __init__(self, door: FrontDoor, ex: _Exchange, answer: StreamAnswer, head: bytes, chunked: bool) -> None:
        StreamSinkBase.__init__(self)
        _Outflow.__init__(self, door, ex)
        self._start = answer.start
        self._chunked = chunked
        self._held.append(head)

    def _send(self, data: bytes) -> None:
        self._emit(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    def _end(self) -> None:
        if self._chunked:
            self._emit(b"0\r\n\r\n")
        self._complete()

    def begin(self) -> None:
        self.run(self._start)

    def halt(self) -> None:
        self.gone()
        self._end()


class _Relay(_Outflow):
    """A Klein-rendered request that streams (``klein_channel``):
    twisted.web frames its bytes; its producer (``rest._RequestSink``) is
    paused, resumed and stopped with the connection."""

    def __init__(self, door: FrontDoor, ex: _Exchange, producer: IPushProducer) -> None:
        super().__init__(door, ex)
        self._producer = producer

    def write(self, data: bytes) -> None:
        if data:
            if not self._ex.status:  # the first bytes are twisted.web's head
                self._ex.status = _status_of(data)
            self._emit(data)

    def finish(self) -> None:
        self._complete()

    def pause(self) -> None:
        self._producer.pauseProducing()

    def resume(self) -> None:
        self._producer.resumeProducing()

    def gone(self) -> None:
        self._producer.stopProducing()

    def halt(self) -> None:
        self.gone()
        request = self._ex.request
        request.unregisterProducer()
        request.finish()  # twisted.web writes the last chunk, then its requestDone ends this relay


@implementer(IPushProducer)
class FrontDoor(Protocol):
    """One REST connection. See the module's docstring for the contract."""

    #: The connection while connected: a TCP transport, or TLS over one
    #: (``write``, ``registerProducer``, ``pauseProducing``, ``abortConnection``...).
    transport: Any

    def __init__(self, factory: FrontDoorFactory) -> None:
        self._factory = factory
        self._node = factory.node
        self._settings = settings = factory.settings
        self._clock = factory.clock
        self._max_body = factory.node.limits.max_body_bytes
        self._max_head = settings.max_head_bytes
        self._fast_routes = factory.fast_routes
        self._meter = factory.meter
        self._parser = HttpRequestParser(self)
        self._exchanges: deque[_Exchange] = deque()
        #: The streaming answer being written (at the head of the queue).
        self._stream: _Outflow | None = None
        #: The exchange whose request is arriving.
        self._current: _Exchange | None = None
        self._in_head = False
        #: Bytes of reads that began and ended inside the current request's head.
        self._head_spill = 0
        #: No further request is read (one asked to close, or the stream broke).
        self._input_closed = False
        self._read_paused = False
        self._write_blocked = False
        self._pumping = False
        self._pump_again = False
        self._closing = False
        self._close_when_read = False
        self._lost = False
        now = self._clock.seconds()
        self._request_started = now
        self._last_activity = now
        self._blocked_since = now
        self._timer: Any = None

    # -- connection ------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted name
        self._factory.connections.add(self)
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._timer = self._clock.callLater(self._horizon(), self._on_timer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted name
        self._lost = True
        self._input_closed = True
        self._factory.connections.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stop_stream()
        exchanges, self._exchanges = self._exchanges, deque()
        for ex in exchanges:
            if ex.deferred is not None:
                d, ex.deferred = ex.deferred, None
                d.cancel()  # the client went away: nobody waits for the answer
            if ex.request is not None:
                request, ex.request = ex.request, None
                request.connectionLost(reason)

    def close_when_idle(self) -> None:
        """Read no further request; close once the answers owed are written."""
        self._input_closed = True
        if self._closing or self._lost:
            return
        if self._exchanges:
            self._exchanges[-1].close = True
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.halt()
            self._pump()
        else:
            self._close()

    def _stop_stream(self) -> None:
        """The client is gone: the live stream's producer stops."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.gone()

    def _close(self) -> None:
        self._closing = True
        self._input_closed = True
        self.transport.unregisterProducer()  # else the transport waits for its producer
        self.transport.loseConnection()

    def _peer(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", "?"))

    # -- reading ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted name
        if self._input_closed and self._current is None:
            return  # after the last request: dropped
        head_before = self._current if self._in_head else None
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            # llhttp stops at an Upgrade (or CONNECT) request; twisted.web
            # ignores upgrades, so it is answered as any request, and the
            # connection closes after it (what follows is not HTTP to llhttp).
            self._input_closed = True
            if self._exchanges:
                last = self._exchanges[-1]
                last.close = True
                last.close_header = last.version == b"HTTP/1.1"
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, _RefuseError):
                self._refuse(cause.error)
            elif isinstance(cause, _IgnoreError) or (self._input_closed and self._current is None):
                pass
            elif cause is not None:
                raise cause from None  # a bug in a callback: Twisted logs it and drops the connection
            else:
                self._refuse(InvalidArgument("malformed HTTP request"))
        else:
            if head_before is not None and self._in_head and self._current is head_before:
                # All of data belongs to a head that is still incomplete.
                self._head_spill += len(data)
                if head_before.head_bytes + self._head_spill > self._max_head:
                    self._refuse(HeadersTooLarge(f"request line and headers exceed {self._max_head} bytes"))
        self._pump()

    # httptools callbacks, in the order llhttp calls them.

    def on_message_begin(self) -> None:
        if self._input_closed:
            raise _IgnoreError()
        ex = _Exchange()
        self._current = ex
        self._exchanges.append(ex)
        self._in_head = True
        self._head_spill = 0
        ex.started_at = self._request_started = self._clock.seconds()

    def on_url(self, url: bytes) -> None:
        ex = self._current
        assert ex is not None
        if not ex.url:
            ex.method = self._parser.get_method()
        ex.url += url
        ex.head_bytes += len(url)
        if ex.head_bytes > self._max_head:
            raise _RefuseError(HeadersTooLarge(f"request line and headers exceed {self._max_head} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self._current
        assert ex is not None
        ex.headers.append((name, value))
        ex.head_bytes += len(name) + len(value) + 2
        if ex.head_bytes > self._max_head:
            raise _RefuseError(HeadersTooLarge(f"request line and headers exceed {self._max_head} bytes"))
        if len(ex.headers) > self._settings.max_headers:
            raise _RefuseError(HeadersTooLarge(f"more than {self._settings.max_headers} header fields"))

    def on_headers_complete(self) -> None:
        ex = self._current
        assert ex is not None
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        if version == "1.1":
            ex.version = b"HTTP/1.1"
        elif version == "1.0":
            ex.version = b"HTTP/1.0"
        else:
            raise _RefuseError(InvalidArgument("malformed HTTP request"))
        ex.head_bytes += len(ex.method) + 10  # the request line's method, spaces and version
        if ex.head_bytes > self._max_head:
            raise _RefuseError(HeadersTooLarge(f"request line and headers exceed {self._max_head} bytes"))
        length = 0
        connection: list[bytes] = []
        expect = None
        for name, value in ex.headers:
            if len(name) not in _NOTED_LENGTHS:
                continue
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)  # llhttp checked it: digits, one value
            elif lower == b"connection":
                connection.append(value)
            elif lower == b"expect":
                if expect is None:
                    expect = value
            elif lower == b"content-type":
                if b"multipart" in value.lower():
                    ex.klein_only = True
            elif lower == b"idempotency-key":
                if ex.idempotency_key is None:
                    ex.idempotency_key = value
            elif lower == b"authorization":
                if ex.authorization is None:
                    ex.authorization = value
        if ex.version != b"HTTP/1.1" or (connection and wants_close(ex.version, connection)):
            ex.close = True
            ex.close_header = ex.version == b"HTTP/1.1"
            self._input_closed = True
        ex.expect_continue = (
            expect is not None and ex.version == b"HTTP/1.1" and expect.strip(b" \t").lower() == b"100-continue"
        )
        if length > self._max_body:
            self._too_large(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._current
        assert ex is not None
        if ex.discard:
            return
        ex.body_bytes += len(body)
        if ex.body_bytes > self._max_body:
            self._too_large(ex)  # chunked: known only now
            return
        ex.body.append(body)

    def on_message_complete(self) -> None:
        ex = self._current
        assert ex is not None
        self._current = None
        self._in_head = False
        ex.complete = True
        if not ex.discard:
            body = ex.body
            ex.body = body[0] if len(body) == 1 else b"".join(body)
        elif self._close_when_read:
            self._close()

    def _too_large(self, ex: _Exchange) -> None:
        """Answer 413 now; the body that follows is dropped."""
        ex.discard = True
        ex.body = b""
        abandon = ex.expect_continue
        if abandon:
            # The client waits for "100 Continue" before it sends the body,
            # and may never send it: the connection cannot stay in step, so
            # it closes after the answer and reads nothing more.
            ex.expect_continue = False
            ex.close = ex.complete = True
            ex.close_header = ex.version == b"HTTP/1.1"
            self._input_closed = True
            self._current = None
        self._answer_error(ex, TooLarge(f"body exceeds {self._max_body} bytes"))
        if abandon:
            raise _IgnoreError()

    def _refuse(self, error: DkvError) -> None:
        """The request arriving (or, if none is, a new one) is answered with
        error and the connection closes after it; nothing more is read."""
        self._input_closed = True
        self._in_head = False
        ex = self._current
        self._current = None
        if ex is None or ex.answer is not None:
            ex = _Exchange()
            ex.started_at = self._clock.seconds()
            self._exchanges.append(ex)
        ex.complete = ex.discard = ex.started = ex.close = True
        ex.expect_continue = False
        ex.body = b""
        log_refused_request(self._peer(), error)
        ex.answer = closing_answer(error, head=ex.method == b"HEAD")

    # -- executing, one request at a time --------------------------------------------

    def _pump(self) -> None:
        """Write the answers due, in order; start the next request once the
        one before it is answered. Re-entered (an answer that is ready at
        once), it only asks the running loop to go round again."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._step()
        finally:
            self._pumping = False
        self._update_reading()

    def _step(self) -> None:
        exchanges = self._exchanges
        out: list[bytes] = []
        size = 0
        close = wrote = False
        while exchanges and not self._lost:
            ex = exchanges[0]
            if ex.expect_continue:
                ex.expect_continue = False
                out.append(_CONTINUE)
            if ex.answer is None:
                stream = ex.stream
                if stream is None:
                    if not ex.complete or ex.started or self._closing:
                        break
                    if self._write_blocked:
                        if out:
                            break  # written below; resumeProducing starts it
                        return
                    self._start(ex)
                    if ex.answer is None:
                        stream = ex.stream
                        if stream is None:
                            break
                if stream is not None:
                    if not stream.live:
                        # A streaming answer's turn: its head (and what it
                        # wrote so far) goes out, then it writes through.
                        if self._closing:
                            break
                        held = stream.go_live()
                        if not ex.status:
                            ex.status = _status_of(held)
                        out.append(held)
                        write_now(self.transport, b"".join(out))
                        out, size, wrote = [], 0, True
                        self._stream = stream
                        if self._write_blocked:
                            stream.pause()
                        else:
                            stream.resume()
                        stream.begin()
                    if ex.answer is None:
                        break  # it holds the queue until it finishes
            exchanges.popleft()
            out.append(ex.answer)
            size += len(ex.answer)
            self._answered(ex)
            if ex.close:
                if ex.complete:
                    close = True
                else:
                    # Answered early (413): its body is still arriving. The
                    # connection closes once it is read (and dropped), so
                    # that the client is not reset while it sends.
                    self._close_when_read = True
                break
            if size >= _WRITE_CHUNK:
                write_now(self.transport, b"".join(out))
                out, size, wrote = [], 0, True
        if out and not self._lost:
            write_now(self.transport, b"".join(out) if len(out) > 1 else out[0])
            wrote = True
        if wrote:
            self._last_activity = self._clock.seconds()
        if close and not self._closing:
            self._close()

    def _start(self, ex: _Exchange) -> None:
        ex.started = True
        path, _, query = ex.url.partition(b"?")
        try:
            hit = None if ex.klein_only else self._fast_routes.match(ex.method, path)
            if hit is None:
                self._render(ex)
                return
            route, params = hit
            ex.route = route
            if route.write and self._refused_write(ex, route):
                return
            args = parse_qs(query, 1) if query else {}
            # A write route's admission was checked just above (_refused_write).
            call = Call(ex.body, args, params, ex.idempotency_key, authorization=ex.authorization, admitted=route.write)
            result = call_handler(route.handler, self._node, call)
        except DkvError as e:
            self._answer_error(ex, e)
            return
        except Exception:  # noqa: BLE001 - a request never kills the node
            self._answer_internal(ex, Failure())
            return
        if isinstance(result, Deferred):
            if result.called and not result.paused and not isinstance(result.result, Failure):
                # Settled already (a serializable read, or an answer of the
                # handler's own): its value is the answer, without a callback.
                self._answer_ok(ex, result.result)
                return
            ex.deferred = result
            result.addBoth(self._finish, ex)
        else:
            self._answer_ok(ex, result)

    def _refused_write(self, ex: _Exchange, route: Route) -> bool:
        """Answer ex with 429 if admission control refuses writes now,
        before its body is parsed or checked (a refusal costs no JSON or
        base64 decoding, and says 429 whatever the body);
        the answer is the handler's own (``answer_error``) or dkv's."""
        try:
            self._node.check_write_admission()
        except Overloaded as e:
            answer_error = getattr(route.handler, "answer_error", None)
            if answer_error is None:
                self._answer_error(ex, e)
            else:
                self._answer_ok(ex, answer_error(e))
            return True
        return False

    def _finish(self, result: Any, ex: _Exchange) -> None:
        ex.deferred = None
        if self._lost:
            return None  # cancelled because the client went away
        if isinstance(result, Failure):
            if isinstance(result.value, DkvError):
                self._answer_error(ex, result.value)
            else:
                self._answer_internal(ex, result)
        else:
            self._answer_ok(ex, result)
        self._pump()
        return None

    # -- answers ---------------------------------------------------------------------

    def _answered(self, ex: _Exchange) -> None:
        """ex's answer is written (its last byte handed to the transport):
        count it in the request metrics, the one place that sees fast and
        Klein-rendered requests alike."""
        status = ex.status or _status_of(ex.answer or b"")
        seconds = self._clock.seconds() - ex.started_at if ex.started_at else 0.0
        self._meter.answered(ex.route, ex.method, ex.url, status, seconds)

    def _answer_ok(self, ex: _Exchange, body: Any) -> None:
        if isinstance(body, RawAnswer):
            ex.answer = self._json_answer(ex, body.status, body.body, body.content_type)
            return
        if isinstance(body, StreamAnswer):
            self._answer_stream(ex, body)
            return
        ex.answer = self._json_answer(ex, 200, _EMPTY if body == {} else encode_json(body))

    def _answer_stream(self, ex: _Exchange, answer: StreamAnswer) -> None:
        """As ``rest._Streaming`` renders it: chunked on HTTP/1.1, the head
        alone for HEAD."""
        head_only = ex.method == b"HEAD"
        chunked = ex.version == b"HTTP/1.1"
        head = self._factory.stream_head(ex.version, answer, ex.close_header, chunked and not head_only)
        if head_only:
            ex.answer = head
        else:
            ex.stream = _Stream(self, ex, answer, head, chunked)

    def _answer_error(self, ex: _Exchange, error: DkvError) -> None:
        log_rejection(ex.method.decode("latin-1"), ex.url.decode("latin-1"), error)
        ex.answer = self._json_answer(ex, error.http_status, encode_json(error_body(error)))

    def _answer_internal(self, ex: _Exchange, failure: Failure) -> None:
        log.failure("internal error answering {uri}", failure, uri=ex.url.decode("latin-1")[:200])
        ex.answer = self._json_answer(ex, 500, encode_json(error_body(DkvError())))

    def _json_answer(self, ex: _Exchange, status: int, body: bytes, content_type: bytes = _JSON) -> bytes:
        """The answer twisted.web writes for a Klein route's JSON (same
        headers in the same order); a ``RawAnswer`` may be of another type."""
        ex.status = status
        head = self._factory.answer_head(ex.version, status, ex.close_header, content_type)
        return b"%s%d\r\n\r\n%s" % (head, len(body), b"" if ex.method == b"HEAD" else body)

    def _render(self, ex: _Exchange) -> None:
        """Have the Klein app answer ex, as twisted.web's channel would."""
        ex.request = klein_channel.render(
            self._factory.site,
            self.transport,
            ex.method,
            ex.url,
            ex.version,
            ex.headers,
            ex.body,
            ex.close_header,
            on_answer=lambda answer: self._rendered(ex, answer),
            on_refused=lambda: self._render_refused(ex),
            on_stream=lambda producer: self._relay(ex, producer),
        )

    def _relay(self, ex: _Exchange, producer: IPushProducer) -> _Relay:
        """The Klein-rendered request of ex streams. Its producer is paused
        until it goes live (now, or when the running loop gets to it): what
        it writes before is held."""
        relay = ex.stream = _Relay(self, ex, producer)
        producer.pauseProducing()
        self._pump()
        return relay

    def _stream_complete(self, stream: _Outflow) -> None:
        if self._stream is stream:
            self._stream = None
        if not self._lost:
            self._pump()

    def _rendered(self, ex: _Exchange, answer: bytes) -> None:
        ex.request = None
        if self._lost:
            return
        ex.answer = answer
        self._pump()

    def _render_refused(self, ex: _Exchange) -> None:
        """twisted.web found the body unparseable (a multipart body that is
        not one): 400, and the connection closes, as on twisted.web."""
        ex.request = None
        if self._lost or ex.answer is not None:
            return
        error = InvalidArgument("malformed HTTP request")
        log_refused_request(self._peer(), error)
        ex.close = True
        self._input_closed = True
        ex.answer = closing_answer(error, head=ex.method == b"HEAD")
        self._pump()

    # -- flow control and timers -------------------------------------------------------

    def _update_reading(self) -> None:
        if self._lost or self._closing:
            return
        pause = (
            self._write_blocked
            or len(self._exchanges) >= self._settings.max_pending
            or (self._input_closed and self._current is None and self._stream is None)
        )
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self._request_started = self._clock.seconds()  # waiting on us is not the client's time
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer: the transport's buffer is full
        if not self._write_blocked:
            self._write_blocked = True
            self._blocked_since = self._clock.seconds()
            if self._stream is not None:
                self._stream.pause()
            self._update_reading()

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer: the transport's buffer drained
        if self._write_blocked:
            self._write_blocked = False
            self._last_activity = self._clock.seconds()
            if self._stream is not None:
                self._stream.resume()
            self._pump()

    def stopProducing(self) -> None:  # noqa: N802 - IPushProducer: the connection is going away
        pass

    def _horizon(self) -> float:
        return min(self._settings.idle_timeout, self._settings.read_timeout)

    def _on_timer(self) -> None:
        """Enforce the deadline that applies now; check again by the next
        one (never later than the shortest timeout from now, so a deadline
        that begins meanwhile is never missed)."""
        self._timer = None
        if self._lost or self._closing:
            return
        now = self._clock.seconds()
        settings = self._settings
        due: float | None = None
        if self._current is not None and not self._read_paused:
            due = self._request_started + settings.read_timeout
            if now >= due:
                self._read_timed_out()
                return
        elif self._write_blocked:
            due = self._blocked_since + settings.idle_timeout
            if now >= due:
                log.info(
                    "closed a REST connection from {peer}: it read no answer for {seconds:g} s",
                    peer=self._peer(),
                    seconds=settings.idle_timeout,
                )
                self._closing = self._input_closed = True
                self.transport.unregisterProducer()
                self.transport.abortConnection()
                self._stop_stream()
                return
        elif not self._exchanges:
            due = self._last_activity + settings.idle_timeout
            if now >= due:
                self._close()
                return
        delay = self._horizon() if due is None else min(due - now, self._horizon())
        self._timer = self._clock.callLater(delay, self._on_timer)

    def _read_timed_out(self) -> None:
        ex = self._current
        if ex is not None and ex.answer is not None:
            # Answered already (413) while its endless body is dropped: the
            # connection closes once that answer is written.
            self._current = None
            self._input_closed = True
            ex.complete = ex.close = True
            error = RequestTimeout(f"body not received within {self._settings.read_timeout:g} s")
            log_refused_request(self._peer(), error)
            if ex in self._exchanges:
                self._pump()
            else:
                self._close()
            return
        self._refuse(RequestTimeout(f"request not received within {self._settings.read_timeout:g} s"))
        self._pump()


class FrontDoorFactory(Factory):
    """Builds a ``FrontDoor`` per connection, up to ``max_connections`` open
    at once; beyond that it refuses (closes) the newest, logging once per
    burst of refusals."""

    noisy = False

    def __init__(
        self,
        node: Node,
        site: Site,
        settings: FrontDoorSettings,
        clock: IReactorTime,
        fast_routes: FastRoutes,
        meter: HttpMeter,
    ) -> None:
        self.node = node
        self.meter = meter
        self.site = site
        self.fast_routes = fast_routes
        self.settings = settings
        self.clock = clock
        self.connections: set[FrontDoor] = set()
        self._refused = 0
        self._date_second = -1
        self._heads: dict[tuple[bytes, int, bool, bytes], bytes] = {}

    def buildProtocol(self, addr: Any) -> FrontDoor | None:  # noqa: N802 - Twisted name
        limit = self.settings.max_connections
        if len(self.connections) >= limit:
            if not self._refused:
                log.warn(
                    "refusing REST connections: {limit} are open (--max-connections); from {peer} on",
                    limit=limit,
                    peer=getattr(addr, "host", "?"),
                )
            self._refused += 1
            return None
        if self._refused:
            log.info("accepting REST connections again; refused {count} meanwhile", count=self._refused)
            self._refused = 0
        return FrontDoor(self)

    def answer_head(self, version: bytes, status: int, close: bool, content_type: bytes = _JSON) -> bytes:
        """A JSON answer's (or a ``RawAnswer``'s) status line and headers as
        twisted.web writes them, up to the value of Content-Length (made once
        a second: the Date changes). A 429 (too many requests) carries
        ``Retry-After``."""
        now = int(time.time())  # the Date is wall time; the reactor clock is monotonic
        if now != self._date_second:
            self._date_second = now
            self._heads.clear()
        key = (version, status, close, content_type)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = (
                b"%s %d %s\r\n%sServer: %s\r\nDate: %s\r\n%sContent-Type: %s\r\nContent-Length: "
                % (
                    version,
                    status,
                    RESPONSES.get(status, b"Unknown Status"),
                    b"Connection: close\r\n" if close else b"",
                    server_version,
                    datetimeToString(now),
                    RETRY_AFTER_HEADER if status == 429 else b"",
                    content_type,
                )
            )
        return head

    def stream_head(self, version: bytes, answer: StreamAnswer, close: bool, chunked: bool) -> bytes:
        """A streaming answer's status line and headers as twisted.web
        writes them for ``rest._Streaming``."""
        headers = Headers()
        if close:
            headers.addRawHeader(b"Connection", b"close")
        headers.addRawHeader(b"Server", server_version)
        headers.addRawHeader(b"Date", datetimeToString(int(time.time())))
        headers.addRawHeader(b"Content-Type", answer.content_type)
        for name, value in answer.headers:
            headers.addRawHeader(name, value)
        if chunked:
            headers.setRawHeaders(b"Transfer-Encoding", [b"chunked"])
        lines = [b"%s %d %s\r\n" % (version, answer.status, RESPONSES.get(answer.status, b"Unknown Status"))]
        lines += (b"%s: %s\r\n" % (name, value) for name, values in headers.getAllRawHeaders() for value in values)
        lines.append(b"\r\n")
        return b"".join(lines)

    def doStop(self) -> None:  # noqa: N802 - Twisted name
        """The port closed (the node is stopping): close keep-alive
        connections too, each after the answers it owes, so clients go to
        another node instead of being told this one is shutting down."""
        super().doStop()
        for protocol in list(self.connections):
            protocol.close_when_idle()


def front_door(
    node: Node,
    clock: IReactorTime,
    settings: FrontDoorSettings = FrontDoorSettings(),
    routes: Sequence[Route] = ROUTES,
) -> FrontDoorFactory:
    """The REST port's factory for node: the front door, with the Klein app
    of ``dkv.api.rest`` for the routes it does not serve itself (of
    ``routes``: tests extend the table)."""
    return FrontDoorFactory(
        node, RestApi(node, routes).site(), settings, clock, FastRoutes(routes), HttpMeter(node.metrics.http, routes)
    )


def _status_of(answer: bytes) -> int:
    """The status of an answer's status line (``HTTP/1.1 200 OK``); 0 if
    it has none."""
    code = answer[9:12]
    return int(code) if answer.startswith(b"HTTP/") and code.isdigit() else 0
