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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.web.http_headers import Headers
from twisted.web.server import Request, Site


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
) -> Request:
    """Render the request with site; the Request, whose ``connectionLost``
    the caller calls if the client goes away before the answer.

    ``close_header`` adds ``Connection: close`` to the answer (HTTPChannel
    does for an HTTP/1.1 request that asked to close). ``on_refused`` is
    called instead of ``on_answer`` when twisted.web finds the body
    unparseable (a multipart body that is not one): HTTPChannel answers 400
    and closes then."""
    channel = _Channel(site, transport, on_answer, on_refused)
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
        self, site: Site, transport: Any, on_answer: Callable[[bytes], None], on_refused: Callable[[], None]
    ) -> None:
        self.site = site
        self.transport = transport
        self._on_answer = on_answer
        self._on_refused = on_refused
        self._out: list[bytes] = []

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
        self._out.append(data)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 - Twisted name
        self._out.extend(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802 - Twisted name
        raise NotImplementedError("REST answers are written whole, never by a producer")

    def unregisterProducer(self) -> None:  # noqa: N802 - Twisted name
        pass

    def requestDone(self, request: Request) -> None:  # noqa: N802 - Twisted name
        self._on_answer(b"".join(self._out))

    def loseConnection(self) -> None:  # noqa: N802 - Twisted name
        pass  # the front door decides when the connection closes

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - Twisted name
        self._on_refused()
