# test-case-name: tests.test_rest
"""The REST API (Klein), grpc-gateway style JSON.

    POST   /v0/kv                 {"key": b64, "value": b64}  -> 200 {}
    GET    /v0/kv/key/{b64key}    [?consistency=serializable] -> 200 {"key", "value"}
    DELETE /v0/kv/key/{b64key}                                -> 200 {}
    GET    /v0/status                                         -> 200 {...}

Every error is ``{"error": reason, "code": grpc_code}`` with the HTTP status
of ``dkv.errors``; a rejected request is logged once and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.server import Request, Site
from werkzeug.exceptions import MethodNotAllowed as _WMethodNotAllowed
from werkzeug.exceptions import NotFound as _WNotFound
from werkzeug.routing import PathConverter, RequestRedirect

from dkv.logs import logger
from dkv.api import b64
from dkv.errors import (
    DkvError,
    InvalidArgument,
    KeyNotFound,
    MethodNotAllowed,
    RouteNotFound,
    TooLarge,
)
from dkv.node import Node

log = logger("dkv.api.rest")

_CONSISTENCY = {"linearizable": True, "serializable": False}


class BoundedRequest(Request):
    """A request that stops buffering its body past ``max_body`` bytes and
    remembers that it did, so the handler can answer 413 without holding an
    oversize body in memory."""

    max_body = 1536 * 1024
    body_too_large = False
    _body_seen = 0

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted name
        self._body_seen += len(data)
        if self._body_seen > self.max_body:
            self.body_too_large = True
            return
        super().handleContentChunk(data)

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
    """Twisted answers a request it cannot parse (request line, header,
    Content-Length, chunked framing, multipart body; a line or the headers
    over 16 KiB) with a bare 400 and closes, or for an over-long line just
    closes. We answer the same 400 with a JSON body, logged once."""

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - Twisted name
        if getattr(self, "_receivedHeaderSize", 0) > self.totalHeadersSize:
            self._reject(f"request line and headers exceed {self.totalHeadersSize} bytes")
        else:
            self._reject("malformed HTTP request")

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - Twisted name
        self._reject(f"request line or header exceeds {self.MAX_LENGTH} bytes")

    _rejected = False

    def _reject(self, message: str) -> None:
        if self._rejected:  # answered already; the connection is closing
            return
        self._rejected = True
        error = InvalidArgument(message)
        peer = self.transport.getPeer() if self.transport is not None else None
        log.info(
            "rejected HTTP request from {peer}: {status} {error}",
            peer=getattr(peer, "host", "?"),
            status=error.http_status,
            error=error.message,
        )
        body = encode_json(error_body(error))
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        if getattr(self, "_command", None) != b"HEAD":  # set once the request line parsed
            self.transport.write(body)
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


class _KeyConverter(PathConverter):
    """The rest of the path. Unlike werkzeug's ``path``, it may begin with
    "/": a standard base64 key may (``////`` is the key 0xffffff)."""

    regex = ".+"
    part_isolating = False


def encode_json(body: Any) -> bytes:
    """body as compact JSON (shared by the Klein and the fast path)."""
    return json.dumps(body, separators=(",", ":")).encode()


def _json(request: IRequest, status: int, body: Any) -> bytes:
    data = encode_json(body)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(data))  # no chunked encoding
    return data


class _QuietSite(Site):
    """No access log: at thousands of requests a second it would cost more
    than the requests. Rejected requests are logged by ``_error``."""

    def log(self, request: IRequest) -> None:
        pass


def log_rejection(method: str, path: str, error: DkvError) -> None:
    """Log a rejected request once (shared by the Klein and the fast path)."""
    if not isinstance(error, KeyNotFound):  # not-found is an answer, not a mistake
        # Client mistakes are logged once at info; 5xx (no leader, unknown
        # outcome) are the cluster's state, logged by replication, so debug.
        emit = log.debug if error.http_status >= 500 else log.info
        emit(
            "rejected {method} {path}: {status} {error}",
            method=method,
            path=path[:200],
            status=error.http_status,
            error=error.message,
        )


def error_body(error: DkvError) -> dict[str, Any]:
    return {"error": error.message, "code": error.grpc_code}


def _error(request: IRequest, error: DkvError) -> bytes:
    log_rejection(request.method.decode("latin-1"), request.uri.decode("latin-1"), error)
    return _json(request, error.http_status, error_body(error))


def parse_put(raw: bytes) -> tuple[bytes, bytes]:
    """The key and value of a ``POST /v0/kv`` body (raises InvalidArgument)."""
    body = RestApi._parse_object(raw)
    return b64.decode(RestApi._field(body, "key"), "key"), b64.decode(RestApi._field(body, "value"), "value")


def linearizable(values: list[bytes] | None) -> bool:
    """The ``consistency`` query parameter (last value wins; default linearizable)."""
    mode = values[-1].decode("utf-8", "replace").lower() if values else "linearizable"
    if mode not in _CONSISTENCY:
        raise InvalidArgument("consistency must be linearizable or serializable")
    return _CONSISTENCY[mode]


class RestApi:
    app = Klein()
    # Base64 keys may contain "//"; do not let werkzeug merge or redirect them.
    app.url_map.merge_slashes = False
    app.url_map.converters["key"] = _KeyConverter

    def __init__(self, node: Node) -> None:
        self.node = node

    def resource(self) -> KleinResource:
        return _JsonKleinResource(self.app)

    def factory(self) -> Any:
        """What the REST port serves: the fast path for the key-value routes,
        handing any other request to ``site()`` (dkv.api.fast_http)."""
        from dkv.api.fast_http import FastHTTPFactory

        return FastHTTPFactory(self.node, self.site())

    def site(self) -> Site:
        site = _QuietSite(self.resource())
        site.protocol = _JsonHTTPChannel  # plain HTTP/1.1: no TLS, so no HTTP/2 to negotiate
        site.requestFactory = type(
            "Request", (BoundedRequest,), {"max_body": self.node.limits.max_body_bytes}
        )
        site.displayTracebacks = False
        site.noisy = False
        site.timeOut = 60  # idle connections (Twisted's default is 12 hours)
        return site

    # -- routes ------------------------------------------------------------------

    @app.route("/v0/kv", methods=["POST"])
    async def put(self, request: IRequest) -> bytes:
        key, value = parse_put(self._raw_body(request))
        await self.node.put(key, value)
        return _json(request, 200, {})

    @app.route("/v0/kv/key/<key:b64key>", methods=["GET"])
    async def get(self, request: IRequest, b64key: str) -> bytes:
        key = b64.decode(b64key, "key")
        value = await self.node.get(key, linearizable=linearizable(request.args.get(b"consistency")))
        return _json(request, 200, {"key": b64.encode(key), "value": b64.encode(value)})

    @app.route("/v0/kv/key/<key:b64key>", methods=["DELETE"])
    async def delete(self, request: IRequest, b64key: str) -> bytes:
        key = b64.decode(b64key, "key")
        await self.node.delete(key)
        return _json(request, 200, {})

    @app.route("/v0/kv/key/", methods=["GET", "DELETE"])
    def empty_key(self, request: IRequest) -> bytes:
        raise InvalidArgument("key must not be empty")

    @app.route("/v0/status", methods=["GET"])
    def status(self, request: IRequest) -> bytes:
        return _json(request, 200, self.node.status())

    # -- membership and leadership -------------------------------------------------

    @app.route("/v0/members", methods=["GET"])
    def members(self, request: IRequest) -> bytes:
        return _json(request, 200, self.node.members())

    @app.route("/v0/members", methods=["POST"])
    async def add_member(self, request: IRequest) -> bytes:
        body = self._json_body(request)
        learner = body.get("learner", False)
        if not isinstance(learner, bool):
            raise InvalidArgument("field 'learner' must be true or false")
        view = await self.node.add_member(self._text(body, "id"), self._text(body, "address"), learner)
        return _json(request, 200, view)

    @app.route("/v0/members/<node_id>/promote", methods=["POST"])
    async def promote_member(self, request: IRequest, node_id: str) -> bytes:
        return _json(request, 200, await self.node.promote_member(node_id))

    @app.route("/v0/members/<node_id>", methods=["DELETE"])
    async def remove_member(self, request: IRequest, node_id: str) -> bytes:
        return _json(request, 200, await self.node.remove_member(node_id))

    @app.route("/v0/leader/transfer", methods=["POST"])
    async def transfer_leader(self, request: IRequest) -> bytes:
        """Body optional: ``{"to": "b"}``; without a target the most
        up-to-date voter takes over."""
        raw = self._raw_body(request)
        body = self._parse_object(raw) if raw.strip() else {}
        to = self._text(body, "to") if "to" in body else None
        return _json(request, 200, await self.node.transfer_leader(to))

    # -- errors ------------------------------------------------------------------

    @app.handle_errors(DkvError)
    def dkv_error(self, request: IRequest, failure: Failure) -> bytes:
        return _error(request, failure.value)

    # RequestRedirect: werkzeug would redirect /v0/kv/key to /v0/kv/key/; it is
    # not a route, so answer 404 rather than fall through to a 500.
    @app.handle_errors(_WNotFound, RequestRedirect)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return _error(request, RouteNotFound(f"no route {request.path.decode('latin-1')[:200]}"))

    @app.handle_errors(_WMethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = ", ".join(failure.value.valid_methods or ())
        if allowed:
            request.setHeader(b"allow", allowed.encode())
        return _error(request, MethodNotAllowed(f"method {request.method.decode('latin-1')} not allowed"))

    @app.handle_errors(Exception)
    def internal(self, request: IRequest, failure: Failure) -> bytes | None:
        if failure.check(CancelledError):
            return None  # the client went away
        log.failure("internal error answering {uri}", failure, uri=request.uri.decode("latin-1")[:200])
        return _json(request, 500, error_body(DkvError()))

    # -- parsing -----------------------------------------------------------------

    def _json_body(self, request: IRequest) -> dict[str, Any]:
        return self._parse_object(self._raw_body(request))

    def _raw_body(self, request: IRequest) -> bytes:
        if getattr(request, "body_too_large", False):
            raise TooLarge(f"body exceeds {self.node.limits.max_body_bytes} bytes")
        raw = request.content.read() if request.content is not None else b""
        if len(raw) > self.node.limits.max_body_bytes:
            raise TooLarge(f"body exceeds {self.node.limits.max_body_bytes} bytes")
        return raw

    @staticmethod
    def _parse_object(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise InvalidArgument(f"malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("body must be a JSON object")
        return body

    @staticmethod
    def _text(body: dict[str, Any], name: str) -> str:
        value = RestApi._string(body, name, "a non-empty string")
        if not value:
            raise InvalidArgument(f"field {name!r} must be a non-empty string")
        return value

    @staticmethod
    def _field(body: dict[str, Any], name: str) -> str:
        return RestApi._string(body, name, "a base64 string")

    @staticmethod
    def _string(body: dict[str, Any], name: str, what: str) -> str:
        if name not in body:
            raise InvalidArgument(f"missing field {name!r}")
        value = body[name]
        if not isinstance(value, str):
            raise InvalidArgument(f"field {name!r} must be {what}")
        return value
