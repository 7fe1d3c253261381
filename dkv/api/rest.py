# test-case-name: tests.test_rest
"""The REST API as a Klein app, generated from the route table
(``dkv.api.routes``), with grpc-gateway style JSON.

This is the home of the full API. The REST port is served by the front door
(``dkv.api.front_door``), which calls the handlers of the hot key-value
routes itself and has this app render every other request in-process;
``RestApi.site()`` serves the same app through twisted.web's own HTTP
channel (the reference the front door is tested against).

Every error is ``{"error": reason, "code": grpc_code}`` with the HTTP status
of ``dkv.errors``; a rejected request is logged once and changes nothing.

A handler's ``StreamAnswer`` is rendered by ``_Streaming``: the head goes
out at once (twisted.web chunks the body on HTTP/1.1), the producer writes
through ``Request.write``, is paused and resumed as the request's producer,
and is stopped when ``notifyFinish`` fails (the client went away) or the
channel stops producing.

``RestApi(node, routes)`` serves another route table than ``ROUTES`` (tests
extend it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.server import version as server_version
from werkzeug.exceptions import MethodNotAllowed as _WMethodNotAllowed
from werkzeug.exceptions import NotFound as _WNotFound
from werkzeug.routing import PathConverter, RequestRedirect
from zope.interface import implementer

from dkv.api.http_common import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    RETRY_AFTER_SECONDS,
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
from dkv.api.routes import REST_OF_PATH, ROUTES, Call, Route
from dkv.errors import (
    DkvError,
    HeadersTooLarge,
    InvalidArgument,
    MethodNotAllowed,
    RouteNotFound,
    TooLarge,
)
from dkv.node import Node


class BoundedRequest(Request):
    """A request that stops buffering its body past ``max_body`` bytes and
    remembers that it did: it is then answered 413 whatever its route,
    without holding an oversize body in memory."""

    max_body = 1536 * 1024
    body_too_large = False
    _body_seen = 0

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted name
        self._body_seen += len(data)
        if self._body_seen > self.max_body:
            self.body_too_large = True
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self.body_too_large:
            super().process()
            return
        self.site = self.channel.site  # type: ignore[attr-defined]  # set by the site on its channels
        self.setHeader(b"Server", server_version)
        self.setHeader(b"Date", datetimeToString())
        self.write(_error(self, TooLarge(f"body exceeds {self.max_body} bytes")))
        self.finish()

    def _handleStar(self) -> None:  # noqa: N802 - Twisted name
        """The target ``*``: Twisted answers ``OPTIONS *`` (200, empty, as
        RFC 9110 intends) and any other method with a bare 405; ours is JSON."""
        if self.method == b"OPTIONS":
            super()._handleStar()
            return
        self.setHeader(b"allow", b"OPTIONS")
        self.write(_error(self, MethodNotAllowed(f"method {self.method.decode('latin-1')} not allowed")))
        self.finish()


class _JsonHTTPChannel(HTTPChannel):
    """twisted.web's channel, answering as the front door does: a request it
    cannot parse (request line, header, Content-Length, chunked framing,
    multipart body) gets a JSON 400, request line and headers over 16 KiB or
    more than 500 header fields a JSON 431, each logged once, and the
    connection closes. ``Connection`` is read as a list of tokens."""

    MAX_LENGTH = MAX_HEAD_BYTES
    totalHeadersSize = MAX_HEAD_BYTES
    maxHeaders = MAX_HEADERS

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - Twisted name
        if getattr(self, "_receivedHeaderSize", 0) > self.totalHeadersSize:
            self._reject(HeadersTooLarge(f"request line and headers exceed {self.totalHeadersSize} bytes"))
        elif getattr(self, "_receivedHeaderCount", 0) > self.maxHeaders:
            self._reject(HeadersTooLarge(f"more than {self.maxHeaders} header fields"))
        else:
            self._reject(InvalidArgument("malformed HTTP request"))

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - Twisted name
        self._reject(HeadersTooLarge(f"request line and headers exceed {self.totalHeadersSize} bytes"))

    def checkPersistence(self, request: Any, version: bytes) -> bool:  # noqa: N802 - Twisted name
        if not wants_close(version, request.requestHeaders.getRawHeaders(b"Connection", [])):
            return True
        if version == b"HTTP/1.1":
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        return False

    _rejected = False
    transport: Any  # a TCP (or TLS) transport while connected

    def _reject(self, error: DkvError) -> None:
        if self._rejected:  # answered already; the connection is closing
            return
        self._rejected = True
        peer = self.transport.getPeer() if self.transport is not None else None
        log_refused_request(getattr(peer, "host", "?"), error)
        # HEAD: known once the request line parsed.
        self.transport.write(closing_answer(error, head=getattr(self, "_command", None) == b"HEAD"))
        self.loseConnection()


class _JsonKleinResource(KleinResource):
    """Klein answers a path that is not UTF-8 with plain text; we answer JSON."""

    def render(self, request: IRequest) -> Any:
        try:
            for segment in request.postpath:
                segment.decode("utf-8")
        except UnicodeDecodeError:
            body = _error(request, InvalidArgument("path is not valid UTF-8"))
            # HEAD: headers only (Content-Length is already set), else Twisted
            # logs a warning for the body it drops.
            return b"" if request.method == b"HEAD" else body
        return super().render(request)


class _RestOfPath(PathConverter):
    """The rest of the path (``routes.REST_OF_PATH``). Unlike werkzeug's
    ``path``, it may begin with "/": a standard base64 key may (``////`` is
    the key 0xffffff)."""

    regex = ".+"
    part_isolating = False


def _json(request: IRequest, status: int, body: Any) -> bytes:
    content_type = b"application/json"
    if isinstance(body, RawAnswer):
        status, data, content_type = body.status, body.body, body.content_type
    else:
        data = encode_json(body)
    request.setResponseCode(status)
    if status == 429:
        request.setHeader(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(data))  # no chunked encoding
    return data


def _error(request: IRequest, error: DkvError) -> bytes:
    log_rejection(request.method.decode("latin-1"), request.uri.decode("latin-1"), error)
    return _json(request, error.http_status, error_body(error))


class _QuietSite(Site):
    """No access log: at thousands of requests a second it would cost more
    than the requests. Rejected requests are logged by ``_error``."""

    def log(self, request: http.Request) -> None:
        pass


@implementer(IPushProducer)
class _RequestSink(StreamSinkBase):
    """A streaming answer's sink on a twisted.web request, which is also
    the request's producer: the channel pauses it while the transport's
    buffer is full and stops it when the connection goes."""

    def __init__(self, request: Request) -> None:
        super().__init__()
        self._request = request

    def _send(self, data: bytes) -> None:
        self._request.write(data)

    def _end(self) -> None:
        self._request.unregisterProducer()
        self._request.finish()

    def pauseProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.pause()

    def resumeProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.resume()

    def stopProducing(self) -> None:  # noqa: N802 - IPushProducer
        self.gone()


class _Streaming(Resource):
    """A ``StreamAnswer`` as a twisted.web resource (Klein renders the
    resources endpoints return)."""

    isLeaf = True

    def __init__(self, answer: StreamAnswer) -> None:
        super().__init__()
        self._answer = answer

    def render(self, request: Request) -> Any:
        answer = self._answer
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.content_type)
        for name, value in answer.headers:
            request.responseHeaders.addRawHeader(name, value)
        if request.method == b"HEAD":
            return b""  # the head only, and the answer ends
        request.write(b"")  # the head, now
        sink = _RequestSink(request)
        request.registerProducer(sink, True)
        request.notifyFinish().addErrback(lambda _: sink.gone())
        sink.run(answer.start)
        return NOT_DONE_YET


def _answer(request: IRequest, body: Any) -> Any:
    """A handler's answer as Klein renders it."""
    if isinstance(body, StreamAnswer):
        return _Streaming(body)
    return _json(request, 200, body)


class RestApi:
    """The Klein app of a route table (``routes.ROUTES`` unless told) for
    one node."""

    def __init__(self, node: Node, routes: Sequence[Route] = ROUTES) -> None:
        self.node = node
        self._app = _app(tuple(routes))

    def resource(self) -> KleinResource:
        # The app bound to this instance, as Klein binds it to an attribute.
        return _JsonKleinResource(self._app.__get__(self, RestApi))

    def site(self) -> Site:
        """The app behind twisted.web's HTTP/1.1 channel (no TLS, so no
        HTTP/2 to negotiate), with the node's body limit."""
        site = _QuietSite(self.resource())
        site.protocol = _JsonHTTPChannel  # type: ignore[method-assign,assignment]  # twisted.web's documented hook
        site.requestFactory = cast(
            "type[Request]", type("Request", (BoundedRequest,), {"max_body": self.node.limits.max_body_bytes})
        )
        site.displayTracebacks = False
        site.noisy = False
        site.timeOut = 60  # idle connections (Twisted's default is 12 hours)
        return site

    def body(self, request: IRequest) -> bytes:
        if getattr(request, "body_too_large", False):
            raise TooLarge(f"body exceeds {self.node.limits.max_body_bytes} bytes")
        raw = request.content.read() if request.content is not None else b""
        if len(raw) > self.node.limits.max_body_bytes:
            raise TooLarge(f"body exceeds {self.node.limits.max_body_bytes} bytes")
        return raw


# -- errors ----------------------------------------------------------------------


def _dkv_error(self: RestApi, request: IRequest, failure: Failure) -> bytes:
    error = failure.value
    assert isinstance(error, DkvError)
    return _error(request, error)


def _not_found(self: RestApi, request: IRequest, failure: Failure) -> bytes:
    return _error(request, RouteNotFound(f"no route {request.path.decode('latin-1')[:200]}"))


def _not_allowed(self: RestApi, request: IRequest, failure: Failure) -> bytes:
    allowed = ", ".join(getattr(failure.value, "valid_methods", None) or ())
    if allowed:
        request.setHeader(b"allow", allowed.encode())
    return _error(request, MethodNotAllowed(f"method {request.method.decode('latin-1')} not allowed"))


def _internal(self: RestApi, request: IRequest, failure: Failure) -> bytes | None:
    if failure.check(CancelledError):
        return None  # the client went away
    log.failure("internal error answering {uri}", failure, uri=request.uri.decode("latin-1")[:200])
    return _json(request, 500, error_body(DkvError()))


def _endpoint(route: Route) -> Any:
    """The Klein endpoint of a route: its handler, answered as JSON (or
    streamed)."""

    def endpoint(self: RestApi, request: IRequest, **params: str) -> Any:
        headers = {name.lower(): values for name, values in request.requestHeaders.getAllRawHeaders()}
        key = request.getHeader(b"idempotency-key")
        authorization = request.getHeader(b"authorization")
        call = Call(
            self.body(request), request.args, params, idempotency_key=key, headers=headers, authorization=authorization
        )
        result = call_handler(route.handler, self.node, call)
        if isinstance(result, Deferred):
            return result.addCallback(lambda body: _answer(request, body))
        return _answer(request, result)

    endpoint.__name__ = endpoint.__qualname__ = route.name
    return endpoint


@functools.cache
def _app(routes: tuple[Route, ...]) -> Klein:
    """The Klein app of a route table (made once per table)."""
    app = Klein()
    # Base64 keys may contain "//"; do not let werkzeug merge or redirect them.
    app.url_map.merge_slashes = False
    app.url_map.converters[REST_OF_PATH] = _RestOfPath
    # Klein tries the handlers in this order.
    app.handle_errors(DkvError)(_dkv_error)
    # RequestRedirect: werkzeug would redirect /v0/kv/key to /v0/kv/key/; it is
    # not a route, so answer 404 rather than fall through to a 500.
    app.handle_errors(_WNotFound, RequestRedirect)(_not_found)
    app.handle_errors(_WMethodNotAllowed)(_not_allowed)
    app.handle_errors(Exception)(_internal)
    for route in routes:
        app.route(route.pattern, methods=list(route.methods), endpoint=route.name)(_endpoint(route))
    return app
