"""A streaming route for tests only: the product's route table, extended
with ``GET /test/stream`` (rendered by Klein) and ``GET`` or ``HEAD
/test/fast-stream`` (served by the front door itself), both answering a
``StreamAnswer`` whose producer the query chooses:

- ``mode=ticks`` (default): ``event i`` lines, the first at once, then one
  every ``every`` seconds of the clock, ``n`` in all, then the end (``n=0``:
  the end at once, inside ``start``);
- ``mode=flood``: ``n`` chunks of ``size`` bytes, written while the sink is
  writable, waiting on ``when_writable`` otherwise, then the end;
- ``mode=manual``: nothing; the test writes to the sink itself;
- ``mode=fail``: ``start`` raises.

``later=S`` answers a Deferred that fires S seconds later with the
``StreamAnswer``. Everything that happens is recorded in ``Streams``.

Never import the reactor or klein at module level here (see conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from dkv.api.http_common import Call, StreamAnswer, StreamSink
from dkv.api.routes import ROUTES, Route

STREAM_PATH = b"/test/stream"
FAST_STREAM_PATH = b"/test/fast-stream"
CONTENT_TYPE = b"text/event-stream"
EXTRA_HEADERS = ((b"Cache-Control", b"no-cache"),)


@attrs.define
class Streams:
    """The test routes' producers, on clock (an ``IReactorTime``)."""

    clock: Any
    sinks: list[StreamSink] = attrs.Factory(list)
    #: How many times a producer's stop() was called.
    stops: int = 0
    #: How many times a flood waited for the sink to become writable again.
    waits: int = 0
    #: Fires with each sink as its producer starts (for tests on a real reactor).
    started: list[Deferred[StreamSink]] = attrs.Factory(list)

    def routes(self) -> tuple[Route, ...]:
        return (
            *ROUTES,
            Route("test_stream", ("GET",), STREAM_PATH.decode(), self.handler),
            # HEAD too, so that the front door answers HEAD itself here.
            Route("test_fast_stream", ("GET", "HEAD"), FAST_STREAM_PATH.decode(), self.handler, fast=True),
        )

    def next_start(self) -> Deferred[StreamSink]:
        d: Deferred[StreamSink] = Deferred()
        self.started.append(d)
        return d

    def handler(self, node: object, call: Call) -> Any:
        args = {name.decode(): values[-1].decode() for name, values in call.args.items()}
        answer = StreamAnswer(200, CONTENT_TYPE, lambda sink: self._start(sink, args), EXTRA_HEADERS)
        if "later" in args:
            d: Deferred[StreamAnswer] = Deferred()
            self.clock.callLater(float(args["later"]), d.callback, answer)
            return d
        return answer

    def _start(self, sink: StreamSink, args: dict[str, str]) -> Callable[[], None]:
        self.sinks.append(sink)
        if self.started:
            self.started.pop(0).callback(sink)
        mode = args.get("mode", "ticks")
        n = int(args.get("n", "3"))
        pending: list[Any] = []  # the next tick's call, or the Deferred a flood waits on

        def stop() -> None:
            self.stops += 1
            for call in pending:
                if isinstance(call, Deferred):
                    call.cancel()
                elif call.active():
                    call.cancel()

        def tick(i: int) -> None:
            pending.clear()
            if i == n:
                sink.finish()
                return
            sink.write(b"event %d\n" % i)
            if i + 1 == n:
                sink.finish()
            else:
                pending.append(self.clock.callLater(float(args.get("every", "1")), tick, i + 1))

        def flood(sent: int) -> None:
            pending.clear()
            size = int(args.get("size", "1000"))
            while sent < n and sink.writable:
                sink.write(bytes([97 + sent % 26]) * size)
                sent += 1
            if sent == n:
                sink.finish()
                return
            self.waits += 1
            d = sink.when_writable()
            pending.append(d)
            d.addCallbacks(lambda _: flood(sent), lambda _: None)

        if mode == "ticks":
            tick(0)
        elif mode == "flood":
            flood(0)
        elif mode == "fail":
            raise RuntimeError("the producer broke")
        return stop


def dechunk(data: bytes) -> tuple[list[bytes], bytes]:
    """The chunks of a chunked body (without the last, empty one) and what
    follows its end; raises if the body is not complete."""
    chunks = []
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            assert data.startswith(b"\r\n"), data[:20]
            return chunks, data[2:]
        chunks.append(data[:size])
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]
