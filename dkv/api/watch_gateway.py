# test-case-name: tests.watch.test_watch_api,tests.watch.test_sse
"""etcd's Watch on the JSON gateway: ``POST /v3/watch`` with one
``WatchRequest`` as JSON (a ``create_request``) answers a stream of
newline-terminated ``{"result": WatchResponse}`` objects, as etcd 3.4's
gateway does: first the created answer, then event batches, progress and
cancel answers, until the client goes away (which drops the watcher). A body
that does not parse is answered at once as etcd's gateway answers it: 500,
``{"error", "message", "code": 2}`` with the JSON decoder's message.

``SinkPump`` writes a session's answers to a REST ``StreamSink`` as the
client reads them (``dkv.api.watch_sse`` uses it too): the session's queue is
what waits, bounded per watcher by the hub.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall

from dkv.api import etcd_json
from dkv.api.http_common import Call, RawAnswer, StreamAnswer, StreamSink, log
from dkv.api.watch_grpc import watch_session
from dkv.errors import NoLeader
from dkv.mvcc.errors import Code
from dkv.node import Node
from dkv.pb.etcd_rpc_pb2 import WatchRequest, WatchResponse
from dkv.watch import WatchSession

#: A session answer as bytes for the client, and whether the answer ends after it.
Render = Callable[[WatchResponse], tuple[bytes, bool]]


class SinkPump:
    """Moves a session's answers to a sink while the sink is writable."""

    def __init__(self, render: Render, keepalive: bytes = b"", every: float = 0.0) -> None:
        """keepalive: written every ``every`` seconds while nothing waits
        (nothing if empty)."""
        self._render = render
        self.session: WatchSession | None = None
        self._sink: StreamSink | None = None
        self._waiting = False
        self._keepalive = keepalive
        self._every = every
        self._beat: LoopingCall | None = None
        self._clock: IReactorTime | None = None
        self._scheduled: IDelayedCall | None = None

    def attach(self, sink: StreamSink, clock: IReactorTime) -> Callable[[], None]:
        """Start writing to sink; returns the stream's ``stop``."""
        self._sink = sink
        self._clock = clock
        if self._keepalive and self._every > 0:
            self._beat = LoopingCall(self._tick)
            self._beat.clock = clock
            self._beat.start(self._every, now=False)
        self._pump()
        return self.stop

    def stop(self) -> None:
        """The client went away, or the answer ended."""
        if self.session is not None:
            self.session.close()
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _tick(self) -> None:
        if self._sink is not None and self._sink.writable:
            self._sink.write(self._keepalive)

    def wake(self) -> None:
        """The session has answers: write them in the next reactor turn
        (never inside the apply turn that made them; answers offered
        meanwhile join them)."""
        if self._clock is not None and self._scheduled is None and not self._waiting:
            self._scheduled = self._clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._scheduled = None
        sink, session = self._sink, self.session
        if sink is None or session is None or self._waiting or session.closed:
            return
        while sink.writable:
            response = session.take()
            if response is None:
                return
            data, end = self._render(response)
            sink.write(data)
            if end:
                self.stop()
                sink.finish()
                return
        self._waiting = True
        sink.when_writable().addCallback(self._writable)

    def _writable(self, _: object) -> None:
        self._waiting = False
        self._pump()


def _gateway_line(response: WatchResponse) -> tuple[bytes, bool]:
    return etcd_json.format_stream_result(response), False


def watch(node: Node, call: Call) -> RawAnswer | StreamAnswer:
    """``POST /v3/watch``."""
    try:
        request = etcd_json.parse_request(call.body, WatchRequest)
    except etcd_json.MalformedRequest as e:
        # etcd's gateway decodes a streamed body outside the call: UNKNOWN (500)
        status, body = etcd_json.format_error(Code.UNKNOWN, e.message)
        log.info("rejected POST /v3/watch: {status} {error}", status=status, error=e.message)
        return RawAnswer(status, body)
    return StreamAnswer(200, b"application/json", start_session(node, request, _gateway_line))


def start_session(
    node: Node, request: WatchRequest, render: Render, keepalive: bytes = b""
) -> Callable[[StreamSink], Callable[[], None]]:
    """A stream's ``start``: a session on node's hub that takes request,
    its answers rendered to the sink. Raises NoLeader now if the node cannot
    serve (it is stopping); the session is made only once the answer's turn
    has come, so a client that leaves before leaves nothing behind."""
    if not node.replication.running:
        raise NoLeader("node is shutting down")

    hub = node.replication.watch_hub

    def start(sink: StreamSink) -> Callable[[], None]:
        pump = SinkPump(render, keepalive, hub.settings.sse_keepalive)
        session = pump.session = watch_session(node, pump.wake)
        session.handle(request)
        return pump.attach(sink, hub.clock)

    return start
