# test-case-name: tests.test_front_door,tests.test_rest
"""One request, already parsed, rendered by a twisted.web site in-process.

The front door parses every request itself; those it does not answer itself
go to the Klein app through ``render``: a ``twisted.web.server.Request`` of
the site's request factory, fed the request's headers and body as
twisted.web's ``HTTPChannel`` would feed them, on a channel that collects
what the request writes. The whole answer (status line, headers, body, as
``HTTPChannel`` would write them) goes to ``on_answer`` once the request
finishes. Nothing is written to the transport; the connection stays the
front door's.

A request that streams (it registers a push producer: ``rest._Streaming``)
is handed to ``on_stream`` instead, with that producer, which returns an
``Outflow``: what was written so far and all that follows go to it as it
comes (framed by twisted.web), and its ``finish`` when the request finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site


class Outflow(Protocol):
    """Where a streaming request's bytes go (the front door's queue)."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


def render(
    site: Site,
    transport: Any,
    method: bytes,
    url: bytes,
    version: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    close_header: bool,
    on_answer: Callable[[bytes], None],
    on_refused: Callable[[], None],
    on_stream: Callable[[IPushProducer], Outflow],
) -> Request:
    """Render the request with site; the Request, whose ``connectionLost``
    the caller calls if the client goes away before the answer.

    ``close_header`` adds ``Connection: close`` to the answer (HTTPChannel
    does for an HTTP/1.1 request that asked to close). ``on_refused`` is
    called instead of ``on_answer`` when twisted.web finds the body
    unparseable (a multipart body that is not one): HTTPChannel answers 400
    and closes then. ``on_stream`` is called when the request streams (see
    the module's docstring)."""
    channel = _Channel(site, transport, on_answer, on_refused, on_stream)
    request: Request = site.requestFactory(channel)
    request_headers = request.requestHeaders
    for name, value in headers:
        request_headers.addRawHeader(name, value.strip(b" \t"))
    request.parseCookies()
    if close_header:
        request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
    content = BytesIO()
    content.write(body)
    request.content = content
    request.requestReceived(method, url, version)
    return request


class _Channel:
    """The twisted.web channel as the request sees it."""

    #: Request.finish logs through channel.factory: no access log.
    factory = None

    def __init__(
        self,
        site: Site,
        transport: Any,
        on_answer: Callable[[bytes], None],
        on_refused: Callable[[], None],
        on_stream: Callable[[IPushProducer], Outflow],
    ) -> None:
        self.site = site
        self.transport = transport
        self._on_answer = on_answer
        self._on_refused = on_refused
        self._on_stream = on_stream
        self._out: list[bytes] = []
        #: Set once the request streams.
        self._outflow: Outflow | None = None

    def getPeer(self) -> Any:  # noqa: N802 - Twisted name
        return self.transport.getPeer()

    def getHost(self) -> Any:  # noqa: N802 - Twisted name
        return self.transport.getHost()

    def isSecure(self) -> bool:  # noqa: N802 - Twisted name
        return ISSLTransport(self.transport, None) is not None

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:  # noqa: N802
        out = self._out
        out += (version, b" ", code, b" ", reason, b"\r\n")
        for name, values in headers.getAllRawHeaders():
            for value in values:
                out += (name, b": ", value, b"\r\n")
        out.append(b"\r\n")

    def write(self, data: bytes) -> None:
        if self._outflow is None:
            self._out.append(data)
        else:
            self._outflow.write(data)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 - Twisted name
        if self._outflow is None:
            self._out.extend(data)
        else:
            self._outflow.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted name
        """The request streams: what it wrote so far (its head) and all it
        writes from now on go to the front door as they come."""
        if not streaming:
            raise NotImplementedError("REST answers stream from push producers only")
        if self._outflow is not None:
            raise RuntimeError("a REST answer streams from one producer")
        self._outflow = outflow = self._on_stream(producer)
        written, self._out = b"".join(self._out), []
        outflow.write(written)

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted name
        pass  # what the request writes next (its last chunk) still streams

    def requestDone(self, request: Request) -> None:  # noqa: N802 - Twisted name
        if self._outflow is None:
            self._on_answer(b"".join(self._out))
        else:
            self._outflow.finish()

    def loseConnection(self) -> None:  # noqa: N802 - Twisted name
        pass  # the front door decides when the connection closes

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - Twisted name
        self._on_refused()
