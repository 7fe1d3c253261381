# test-case-name: tests.client.test_client_watch,tests.compat.test_client_recipes
"""A watch over etcd's JSON gateway that survives disconnects.

``POST /v3/watch`` with ``{"create_request": ...}`` keeps the response
open and writes one JSON object a line, ``{"result": WatchResponse}``:
first the created message, then event batches; a watcher that starts below
the compacted revision is answered ``canceled`` with ``compact_revision``.

A ``Watch`` reads that stream and hands out its events one by one, in
order. When the stream ends or cannot be opened (a node killed, restarted,
partitioned away with a reset, answering 503), it opens a new one on the
next endpoint with ``start_revision`` = the last revision it has seen + 1
(the first one it was asked for before any event; the created message's
revision + 1 when it started "from now"), so no event is lost or repeated
(events at or below the last revision seen are dropped). It retries, with
a pause growing to a second after each round of endpoints, until closed. A
resume point that was compacted meanwhile fails the watch with
``Compacted``; any other refusal (a 4xx) fails it with that error.

    w = client.watch(b"key", prefix=True)
    await w.ready()                 # the server has created the watcher
    async for event in w:           # Events; ends (StopAsyncIteration) on close()
        ...
    w.close()
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

from dkv.client.errors import Compacted, DkvClientError, NoLeader, OutcomeUnknown, Unreachable, WatchClosed, from_answer
from dkv.client.queue import ItemQueue
from dkv.client.transport import MAYBE_SENT, NOT_SENT, Transport
from dkv.client.values import Event, Header, as_int


class _Lines(protocol.Protocol):
    """Split a streamed body into JSON objects, one a line; a line that is
    not JSON ends the stream with a DkvClientError."""

    def __init__(self, on_message: Any) -> None:
        self.on_message = on_message
        self.buffer = b""
        self.finished: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    message = json.loads(line)
                except ValueError:
                    message = {"error": DkvClientError(f"not JSON in the watch stream: {line[:80]!r}")}
                self.on_message(message)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        # A line left in the buffer was cut off by the disconnect: it is read
        # again from the resume point on the next stream.
        self.buffer = b""
        if not self.finished.called:
            self.finished.callback(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]  # a response body's transport is a producer


class Watch:
    """Events of one key or range, from ``start_revision`` on (0: from
    now), across disconnects and endpoint failures (see the module)."""

    def __init__(self, transport: Transport, create_request: dict[str, Any]) -> None:
        self.transport = transport
        self.create_request = dict(create_request)
        self.events: ItemQueue[Event] = ItemQueue()
        #: The next revision this watch wants: resume from here (0: from now).
        self.next_revision = as_int(create_request.get("start_revision"))
        #: Events below this revision come from an earlier stream: dropped.
        self._floor = 0
        #: How many streams were opened (1 when no reconnect happened).
        self.streams = 0
        self._header: Header | None = None
        self._ready: list[defer.Deferred[Header]] = []
        self._ended: DkvClientError | None = None
        self._stream_error: DkvClientError | None = None
        #: Messages read from the current stream.
        self._messages = 0
        self._closed = False
        self._lines: _Lines | None = None
        self._running = defer.ensureDeferred(self._run())
        self._running.addErrback(self._crashed)

    @property
    def last_revision(self) -> int:
        """The newest revision this watch has seen (0: none yet)."""
        return max(self.next_revision - 1, 0)

    def ready(self) -> defer.Deferred[Header]:
        """Fires when the first stream's watcher is created (with its header)."""
        if self._header is not None:
            return defer.succeed(self._header)
        if self._ended is not None:
            return defer.fail(self._ended)
        d: defer.Deferred[Header] = defer.Deferred()
        self._ready.append(d)
        return d

    def next(self) -> defer.Deferred[Event]:
        """The next event; fails with WatchClosed after close(), with
        Compacted or another DkvClientError when the watch ended."""
        return self.events.get()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.next()
        except WatchClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching: the stream is closed, events not read yet are
        dropped, readers get WatchClosed."""
        if self._closed:
            return
        self._closed = True
        self.events.fail(WatchClosed("watch closed"), drop=True)
        self._end(WatchClosed("watch closed"))
        if self._lines is not None:
            self._lines.abort()
        self._running.cancel()

    def _end(self, error: DkvClientError) -> None:
        if self._ended is None:
            self._ended = error
        self.events.fail(error)
        waiting, self._ready = self._ready, []
        for d in waiting:
            d.errback(error)

    def _crashed(self, failure: Failure) -> None:
        if not self._closed:
            self._end(DkvClientError(f"watch failed: {failure.getErrorMessage()}"))

    def _message(self, message: dict[str, Any]) -> None:
        if "error" in message and "result" not in message:  # grpc-gateway's in-stream error
            raise _StreamError(message["error"])
        result = message.get("result", {})
        header = Header.from_json(result.get("header"))
        if result.get("canceled"):
            compact = as_int(result.get("compact_revision"))
            reason = result.get("cancel_reason") or "watch canceled by the server"
            if compact:
                raise _StreamError(
                    Compacted(f"etcdserver: mvcc: required revision has been compacted ({compact})", compact)
                )
            raise _StreamError(DkvClientError(reason))
        if result.get("created"):
            if self.next_revision == 0:
                self.next_revision = header.revision + 1
            if self._header is None:
                self._header = header
                waiting, self._ready = self._ready, []
                for d in waiting:
                    d.callback(header)
            return
        events = [Event.from_json(e) for e in result.get("events", ())]
        if not events:  # a progress notification: everything up to its revision was sent
            self.next_revision = max(self.next_revision, header.revision + 1)
            return
        self.next_revision = max(self.next_revision, max(e.revision for e in events) + 1)
        for event in events:  # a reader may run at once: the resume point is updated first
            if event.revision >= self._floor:
                self.events.put(event)

    async def _run(self) -> None:
        pause = 0.05
        failures_in_round = 0
        while not self._closed:
            endpoint = self.transport.endpoints[self.transport.current]
            body = dict(self.create_request)
            if self.next_revision:
                body["start_revision"] = str(self.next_revision)
            self._floor = self.next_revision
            self._messages = 0
            error: DkvClientError | None = None
            try:
                response = await self.transport.open_stream(endpoint, "/v3/watch", {"create_request": body})
            except (*NOT_SENT, *MAYBE_SENT, NoLeader, OutcomeUnknown, Unreachable):
                response = None
            except DkvClientError as e:
                self._end(e)
                return
            if response is not None:
                self.streams += 1
                lines = _Lines(self._checked)
                self._lines = lines
                response.deliverBody(lines)
                await lines.finished
                self._lines = None
                error, self._stream_error = self._stream_error, None
                if error is not None and not isinstance(error, NoLeader | OutcomeUnknown):
                    self._end(error)
                    return
            if self._closed:
                return
            self.transport.rotate()
            if self._messages and error is None:
                pause, failures_in_round = 0.05, 0
                continue
            # Nothing came of this endpoint: after a round of them, pause.
            failures_in_round += 1
            if failures_in_round >= len(self.transport.endpoints):
                failures_in_round = 0
                await task.deferLater(self.transport.clock, pause, lambda: None)
                pause = min(pause * 2, 1.0)

    def _checked(self, message: dict[str, Any]) -> None:
        if self._stream_error is not None:
            return
        self._messages += 1
        try:
            self._message(message)
        except _StreamError as e:
            self._stream_error = e.error
            if self._lines is not None:
                self._lines.abort()


class _StreamError(Exception):
    """A message that ends the watch."""

    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        if isinstance(error, DkvClientError):
            self.error = error
        elif isinstance(error, dict):  # grpc-gateway's in-stream error object
            self.error = from_answer(as_int(error.get("http_code")) or 500, {
                "message": error.get("message"), "code": error.get("grpc_code"),
            })  # fmt: skip
        else:
            self.error = DkvClientError(str(error))
