# test-case-name: tests.test_rest,tests.test_fast_http
"""The REST port's fast path: a lean HTTP/1.1 server for the key-value routes.

Profiling the leader under write load showed twisted.web + Klein spending
more CPU per request than everything else together (parsing Content-Type
with the ``email`` package alone took a fifth). This protocol serves

    POST /v0/kv, GET /v0/kv/key/{b64}[?consistency=...], DELETE /v0/kv/key/{b64}

on keep-alive connections with the same answers as the Klein routes (they
share ``dkv.api.rest``'s parsing, errors and logging), and gives anything
else — another route or method, chunked bodies, ``Expect``, an oversize or
odd request — to the Klein site: the connection is handed over to a
twisted.web channel with the bytes read so far, and stays there.

Pipelined requests are served one after the other, like twisted.web.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web.http import parse_qs

from dkv.api import b64
from dkv.api.rest import encode_json, error_body, linearizable, log, log_rejection, parse_put
from dkv.errors import DkvError, InvalidArgument
from dkv.node import Node

_MAX_HEAD = 16 * 1024
_TARGET = re.compile(rb"\A[!-~]+\Z")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Content Too Large",
            500: b"Internal Server Error", 503: b"Service Unavailable", 504: b"Gateway Timeout"}
_EMPTY_OK = b"{}"
_KEY_PREFIX = b"/v0/kv/key/"


class _Slot:
    """One pipelined request's place in the answer order."""

    __slots__ = ("response", "deferred")

    def __init__(self) -> None:
        self.response: bytes | None = None
        self.deferred: Deferred[Any] | None = None


class FastHTTPProtocol(Protocol, TimeoutMixin):
    #: Idle keep-alive connections are closed after this long, as twisted.web does.
    idle_timeout = 60

    def __init__(self, node: Node, site: Any, factory: FastHTTPFactory | None = None) -> None:
        self._node = node
        self._site = site
        self._factory = factory
        self._buf = b""
        self._slots: deque[_Slot] = deque()
        self._close_after: _Slot | None = None
        self._handing_over = False
        self._closed = False

    # -- input -------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted name
        self.setTimeout(self.idle_timeout)
        if self._factory is not None:
            self._factory.connections.add(self)

    def close_when_idle(self) -> None:
        """Close now if no answer is pending, else right after it."""
        if self._handing_over:
            return
        if self._slots:
            self._close_after = self._slots[-1]
        else:
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:  # noqa: N802 - Twisted name
        if self._slots:
            self.resetTimeout()  # waiting for the cluster is not idling
        else:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted name
        self.resetTimeout()
        self._buf = self._buf + data if self._buf else data
        if not self._handing_over and self._close_after is None:
            self._parse()

    def _parse(self) -> None:
        # One request at a time, as twisted.web does: a pipelined GET after a
        # POST must see the POST's effect (RFC 9112 §9.3.2).
        while self._buf and not self._slots and not self._handing_over and self._close_after is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    self._hand_over()
                return
            head = self._buf[:end]
            request = self._request(head)
            if request is None:
                self._hand_over()
                return
            method, target, length, close = request
            if length > self._node.limits.max_body_bytes:
                self._hand_over()  # twisted.web bounds it and answers 413
                return
            total = end + 4 + length
            if len(self._buf) < total:
                return
            body = self._buf[end + 4 : total]
            self._buf = self._buf[total:]
            slot = _Slot()
            self._slots.append(slot)
            if close:
                self._close_after = slot
            self._serve(slot, method, target, body)

    def _request(self, head: bytes) -> tuple[bytes, bytes, int, bool] | None:
        """(method, target, content length, close after) of a request the
        fast path serves; None for anything else."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if not _TARGET.match(target):
            return None  # raw spaces, controls or non-ASCII: twisted.web rejects it
        if version == b"HTTP/1.1":
            close = False
        elif version == b"HTTP/1.0":
            close = True
        else:
            return None
        if method == b"POST":
            if target != b"/v0/kv":
                return None
        elif method in (b"GET", b"DELETE"):
            if not target.startswith(_KEY_PREFIX) or len(target) == len(_KEY_PREFIX):
                return None
        else:
            return None
        length = None
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t") or _CTL.search(line):
                return None  # malformed, folded or with controls: let twisted.web judge
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens:
                    close = False
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                return None
            elif name == b"content-type":
                kind = value.split(b";", 1)[0].strip().lower()
                if kind.startswith(b"multipart/") or kind == b"application/x-www-form-urlencoded":
                    return None  # twisted.web parses (and judges) form bodies
        if method == b"POST" and length is None:
            return None
        return method, target, length or 0, close

    # -- routes ------------------------------------------------------------------

    def _serve(self, slot: _Slot, method: bytes, target: bytes, body: bytes) -> None:
        try:
            if method == b"POST":
                key, value = parse_put(body)
                d = self._node.put(key, value)
                d.addCallback(lambda _: (200, _EMPTY_OK))
            else:
                path, _, query = target.partition(b"?")
                raw_key = unquote_to_bytes(path[len(_KEY_PREFIX) :])
                try:
                    key = b64.decode(raw_key.decode("utf-8"), "key")
                except UnicodeDecodeError:
                    raise InvalidArgument("path is not valid UTF-8") from None
                if method == b"GET":
                    lin = linearizable(parse_qs(query, 1).get(b"consistency")) if query else True
                    d = self._node.get(key, linearizable=lin)
                    d.addCallback(
                        lambda value, key=key: (200, encode_json({"key": b64.encode(key), "value": b64.encode(value)}))
                    )
                else:
                    d = self._node.delete(key)
                    d.addCallback(lambda _: (200, _EMPTY_OK))
        except DkvError as e:
            self._answer(slot, self._error(method, target, e))
            return
        except Exception:  # noqa: BLE001 - a request never kills the node
            self._answer(slot, self._internal(method, target, Failure()))
            return
        if not d.called:
            slot.deferred = d  # cancelled if the client goes away
        d.addBoth(self._finish, slot, method, target)

    def _finish(self, result: Any, slot: _Slot, method: bytes, target: bytes) -> None:
        slot.deferred = None
        if isinstance(result, Failure):
            if isinstance(result.value, DkvError):
                self._answer(slot, self._error(method, target, result.value))
            elif self._closed:
                return  # cancelled because the client went away
            else:
                self._answer(slot, self._internal(method, target, result))
        else:
            self._answer(slot, result)

    def _error(self, method: bytes, target: bytes, error: DkvError) -> tuple[int, bytes]:
        log_rejection(method.decode("latin-1"), target.decode("latin-1"), error)
        return error.http_status, encode_json(error_body(error))

    def _internal(self, method: bytes, target: bytes, failure: Failure) -> tuple[int, bytes]:
        log.failure("internal error answering {uri}", failure, uri=target.decode("latin-1")[:200])
        return 500, encode_json(error_body(DkvError()))

    # -- output ------------------------------------------------------------------

    def _answer(self, slot: _Slot, response: tuple[int, bytes]) -> None:
        status, body = response
        slot.response = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
            status,
            _REASONS.get(status, b"Unknown"),
            len(body),
            b"Connection: close\r\n" if slot is self._close_after else b"",
            body,
        )
        self._flush()

    def _flush(self) -> None:
        out = []
        while self._slots and self._slots[0].response is not None:
            slot = self._slots.popleft()
            out.append(slot.response)
            if slot is self._close_after:
                self._slots.clear()
                break
        if out and not self._closed:
            self.transport.write(b"".join(out))
        if self._close_after is not None and not self._slots:
            self.transport.loseConnection()
        elif self._handing_over and not self._slots:
            self._switch()
        elif out and not self._slots and self._buf:
            self._parse()  # the next pipelined request

    # -- handing over to twisted.web ----------------------------------------------

    def _hand_over(self) -> None:
        """Give the connection to the Klein site once our answers are out."""
        self._handing_over = True
        if self._slots:
            self.transport.pauseProducing()
        else:
            self._switch()

    def _switch(self) -> None:
        self.setTimeout(None)
        if self._factory is not None:
            self._factory.connections.discard(self)
        channel = self._site.buildProtocol(self.transport.getPeer())
        transport = self.transport
        transport.protocol = channel
        channel.makeConnection(transport)
        transport.resumeProducing()
        data, self._buf = self._buf, b""
        if data:
            channel.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted name
        self._closed = True
        self.setTimeout(None)
        if self._factory is not None:
            self._factory.connections.discard(self)
        for slot in list(self._slots):
            if slot.deferred is not None:
                slot.deferred.cancel()
        self._slots.clear()


class FastHTTPFactory(Factory):
    noisy = False

    def __init__(self, node: Node, site: Any) -> None:
        self.node = node
        self.site = site
        self.connections: set[FastHTTPProtocol] = set()

    def buildProtocol(self, addr: Any) -> FastHTTPProtocol:  # noqa: N802 - Twisted name
        return FastHTTPProtocol(self.node, self.site, self)

    def doStart(self) -> None:  # noqa: N802 - the site's own start/stop bookkeeping
        super().doStart()
        self.site.doStart()

    def doStop(self) -> None:  # noqa: N802
        """The port closed (the node is stopping): close keep-alive
        connections too, each after the answer it owes, so clients go to
        another node instead of being told this one is shutting down."""
        super().doStop()
        self.site.doStop()
        for protocol in list(self.connections):
            protocol.close_when_idle()
