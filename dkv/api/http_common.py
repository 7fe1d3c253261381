# test-case-name: tests.test_front_door,tests.test_rest
"""What the two REST stacks share, so that they answer alike: the front door
(``dkv.api.front_door``, which serves the REST port) and the Klein site
(``dkv.api.rest``, the home of the full API, rendered by the front door for
every request it does not serve itself).

Both import this module and ``dkv.api.routes``; the Klein site never
imports the front door.

Every error answer is ``{"error": reason, "code": grpc_code}`` with the HTTP
status of its ``dkv.errors`` class, and every rejected request is logged
once, at info for a client's mistake and at debug for the cluster's state
(5xx), under the namespace ``dkv.api.rest``.

A handler's answer is complete (a JSON body or a ``RawAnswer``, sent with a
``Content-Length``) or a ``StreamAnswer``, whose body comes over time
through a ``StreamSink``; both stacks frame it alike:

- HTTP/1.1: ``Transfer-Encoding: chunked``, each ``write`` one chunk,
  ``finish`` the last chunk; requests pipelined behind it wait their turn;
- HTTP/1.0: the body as it comes, no length, and the connection closes at
  its end;
- HEAD: the head only, and the answer ends there (``start`` is not called).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed

from dkv.errors import DkvError, InvalidArgument, KeyNotFound, Overloaded
from dkv.idempotency import parse_key
from dkv.logs import logger

log = logger("dkv.api.rest")

#: Bytes of a request line and its header lines (twisted.web's totalHeadersSize).
#: More is answered 431.
MAX_HEAD_BYTES = 16 * 1024
#: Header fields in one request (twisted.web's maxHeaders). More is answered 431.
MAX_HEADERS = 500

#: Reason phrases of the answers written by ``closing_answer``.
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


class Call:
    """What a route's handler may read of a request: its body, its query
    arguments (``parse_qs`` of the query, blank values kept), the path
    parameters, the raw ``Idempotency-Key`` and ``Authorization`` headers
    (the first one; None if absent), and its headers (lower-case name ->
    values; given by the Klein site only: a fast route sees none).
    ``admitted``: the caller checked write admission
    (``check_write_admission``) just before ``call_handler``, in the same
    call, so a write the handler proposes there need not be checked again
    (``call_handler`` clears it when the handler has to wait)."""

    __slots__ = ("body", "args", "params", "idempotency_key", "headers", "authorization", "admitted")

    def __init__(
        self,
        body: bytes,
        args: dict[bytes, list[bytes]],
        params: dict[str, str],
        idempotency_key: bytes | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
        authorization: bytes | None = None,
        admitted: bool = False,
    ) -> None:
        self.body = body
        self.args = args
        self.params = params
        self.idempotency_key = idempotency_key
        self.headers = headers or {}
        self.authorization = authorization
        self.admitted = admitted


def call_handler(handler: Callable[[Any, Call], Any], node: Any, call: Call) -> Any:
    """Run a route's handler for call, as both stacks do: with the node
    keyed by the request's ``Idempotency-Key`` (``Node.keyed``; a bad key
    raises InvalidArgument, a 400, unless the handler has an
    ``answer_bad_key(error)`` attribute: then that answers, in the handler's
    own error form, as the etcd gateway's do) and carrying its
    ``Authorization`` token (``Node.with_token``: the header's value, or what
    follows ``Bearer``)."""
    if call.idempotency_key is not None:
        try:
            key = parse_key(call.idempotency_key)
        except InvalidArgument as e:
            answer_bad_key = getattr(handler, "answer_bad_key", None)
            if answer_bad_key is None:
                raise
            return answer_bad_key(e)
        node = node.keyed(key)
    if call.authorization is not None:
        node = node.with_token(auth_token(call.authorization))
        ready = node.token_ready()
        if ready is not None:
            call.admitted = False  # the handler runs later: a write of it is checked then
            return ready.addCallback(lambda _: handler(node, call))
    return handler(node, call)


def auth_token(header: bytes) -> str:
    """The token of an ``Authorization`` header: its value as etcd's
    gateway takes it, or after ``Bearer `` (any case)."""
    value = header.strip()
    if value[:7].lower() == b"bearer ":
        value = value[7:].strip()
    return value.decode("latin-1")


@attrs.frozen
class RawAnswer:
    """A handler's answer that is not dkv's JSON: a status and an encoded
    body as they are (etcd's gateway answers, errors included; the status
    page's HTML, ``GET /metrics``), sent with ``content_type``."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"


class StreamSink(Protocol):
    """Where a streaming answer writes, once its head is out."""

    def write(self, data: bytes) -> None:
        """Send data as one chunk (nothing if data is empty). Never blocks:
        mind ``writable``. Ignored once the answer ended or the client went
        away."""

    def finish(self) -> None:
        """End the answer (the last chunk). ``stop`` is never called after
        it. Ignored if the client went away."""

    @property
    def writable(self) -> bool:
        """False while the client reads slower than the answer is written
        (the connection's write buffer is over its bound), and once the
        answer ended or the client went away."""

    def when_writable(self) -> Deferred[None]:
        """Fires (with None) when ``writable``: at once if it is now, else
        when the write buffer drains. Never fires if the answer ends or the
        client goes away first (``stop`` says so)."""


#: What a streaming answer's producer is given when its head is out; it
#: returns ``stop``.
StreamStart = Callable[[StreamSink], Callable[[], None]]


def _status_with_body(instance: Any, attribute: Any, status: int) -> None:
    if status < 200 or status in (204, 304):
        raise ValueError(f"a streaming answer needs a status that has a body, not {status}")


@attrs.frozen
class StreamAnswer:
    """A handler's answer whose body comes over time.

    ``start(sink)`` is called once, when the head is written (the answer's
    turn on its connection has come), and returns ``stop``: called at most
    once, when the client goes away, the connection is aborted because its
    client reads nothing, or the node stops, and never after
    ``sink.finish()``. After it the sink drops whatever is written. A
    ``start`` that raises is logged, and the answer ends there.

    ``headers`` are sent after ``Content-Type`` (e.g. ``Cache-Control:
    no-cache``); neither a length nor a transfer coding belongs there."""

    status: int = attrs.field(validator=_status_with_body)
    content_type: bytes
    start: StreamStart
    headers: tuple[tuple[bytes, bytes], ...] = ()


_OPEN, _FINISHED, _GONE = range(3)


class StreamSinkBase:
    """What the two stacks' sinks share: writability, its waiters, and the
    producer's ``stop``, called once. A subclass sends (``_send``) and ends
    (``_end``) the answer; its stack calls ``pause``, ``resume`` and
    ``gone`` as the connection fills, drains and goes away."""

    def __init__(self) -> None:
        self._state = _OPEN
        self._paused = False
        self._stop: Callable[[], None] | None = None
        self._waiters: list[Deferred[None]] = []

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    # -- StreamSink --------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if data and self._state == _OPEN:
            self._send(data)

    def finish(self) -> None:
        if self._state != _OPEN:
            return
        self._state = _FINISHED
        self._stop = None
        self._waiters = []
        self._end()

    @property
    def writable(self) -> bool:
        return not self._paused and self._state == _OPEN

    def when_writable(self) -> Deferred[None]:
        if self._state != _OPEN:
            return Deferred()  # never fires: stop() told the producer
        if not self._paused:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    # -- for the stack ---------------------------------------------------------------------

    def run(self, start: StreamStart) -> None:
        """Call ``start(self)`` and keep its ``stop``."""
        try:
            stop = start(self)
        except Exception:  # noqa: BLE001 - a producer never kills the connection's other answers
            log.failure("a streaming answer failed to start")
            self.finish()
            return
        if self._state == _OPEN:
            self._stop = stop
        elif self._state == _GONE:
            _call_stop(stop)  # the client went away while it started

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        while self._waiters and not self._paused:
            d = self._waiters.pop(0)
            if not d.called:  # not cancelled
                d.callback(None)

    def gone(self) -> None:
        """The client went away (or the node stops): stop the producer."""
        if self._state != _OPEN:
            return
        self._state = _GONE
        self._waiters = []
        stop, self._stop = self._stop, None
        if stop is not None:
            _call_stop(stop)


def _call_stop(stop: Callable[[], None]) -> None:
    try:
        stop()
    except Exception:  # noqa: BLE001 - the connection's cleanup goes on
        log.failure("a streaming answer failed to stop")


#: Every 429 answer (too many requests: admission control, or etcd's
#: RESOURCE_EXHAUSTED on the gateway) tells the client when to retry.
RETRY_AFTER_SECONDS = 1
RETRY_AFTER_HEADER = b"Retry-After: %d\r\n" % RETRY_AFTER_SECONDS


def encode_json(body: Any) -> bytes:
    """body as compact JSON."""
    return json.dumps(body, separators=(",", ":")).encode()


def error_body(error: DkvError) -> dict[str, Any]:
    """The JSON body of an error answer; a refusal by admission control
    also names its reason and the seconds to wait (``Retry-After``)."""
    if isinstance(error, Overloaded):
        return {"error": error.message, "code": error.grpc_code, "reason": error.reason,
                "retry_after": error.retry_after}  # fmt: skip
    return {"error": error.message, "code": error.grpc_code}


def log_rejection(method: str, path: str, error: DkvError) -> None:
    """Log a request the API rejected, once. "Key not found" is an answer,
    not a mistake, and is not logged."""
    if isinstance(error, (KeyNotFound, Overloaded)):  # admission control logs its refusals
        return
    # Client mistakes are logged at info; 5xx (no leader, unknown outcome)
    # are the cluster's state, logged by replication, so debug here.
    emit = log.debug if error.http_status >= 500 else log.info
    emit(
        "rejected {method} {path}: {status} {error}",
        method=method,
        path=path[:200],
        status=error.http_status,
        error=error.message,
    )


def log_refused_request(peer: str, error: DkvError) -> None:
    """Log, once, a request refused before it reached the API (it could not
    be parsed, was too large, or too slow); the connection closes."""
    log.info(
        "rejected HTTP request from {peer}: {status} {error}", peer=peer, status=error.http_status, error=error.message
    )


def closing_answer(error: DkvError, head: bool = False) -> bytes:
    """The whole answer to a request refused at the HTTP level, announcing
    that the connection closes. Without the body if the request was HEAD."""
    body = encode_json(error_body(error))
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        error.http_status,
        _REASONS.get(error.http_status, b"Error"),
        len(body),
        b"" if head else body,
    )


def wants_close(version: bytes, connection: Iterable[bytes]) -> bool:
    """Whether the connection closes after the answer to a request of this
    HTTP version with these ``Connection`` header values: always after
    HTTP/1.0 (as twisted.web does), after HTTP/1.1 when a value names the
    token ``close`` (any case, in a list separated by commas or spaces)."""
    if version != b"HTTP/1.1":
        return True
    for value in connection:
        for token in value.replace(b",", b" ").split():
            if token.lower() == b"close":
                return True
    return False
