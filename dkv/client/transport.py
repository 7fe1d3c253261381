# test-case-name: tests.client.test_client_http
"""How ``dkv.client`` reaches a cluster: JSON POSTs to etcd's v3 gateway
over treq, on several endpoints, with failover.

The rules (one ``call`` = one logical request):

- A connection that cannot be made (refused, unreachable, DNS) means
  nothing was sent: the next endpoint is tried, for any request.
- HTTP 503 (no leader, code 14) means nothing was applied: the next
  endpoint is tried, for any request.
- A timeout, a connection cut after sending, or HTTP 504 (the server's own
  "outcome unknown") may hide an applied write. A read is simply retried
  elsewhere. A write carries an ``Idempotency-Key`` header, a uuid4 made
  for it and the same on every retry (dkv answers a retry with the first
  outcome and applies nothing twice; etcd ignores the header), and is
  retried with it while ``retry_writes`` is on; otherwise, or when the
  deadline passes, the caller gets ``OutcomeUnknown``.
- Any other answer is final: 200 is returned, an error is raised as the
  typed exception ``dkv.client.errors.from_answer`` makes of it.

After a round over every endpoint without an answer the client waits a
little (doubling, up to a second) before the next round; the whole call
gives up at ``timeout`` seconds, each attempt at ``attempt_timeout``. The
endpoint that answered last is tried first next time.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer, error, protocol, task
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web import client as web_client
from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed
from twisted.web.iweb import IResponse

from dkv.client.errors import DkvClientError, NoLeader, OutcomeUnknown, Unreachable, from_answer
from dkv.client.tls import ClientTls

IDEMPOTENCY_HEADER = "Idempotency-Key"
JSON_HEADERS: dict[bytes | str, list[bytes | str]] = {"Content-Type": ["application/json"]}

#: Failures that mean the connection was never made: nothing was sent.
NOT_SENT = (error.ConnectError, error.ConnectingCancelledError, error.DNSLookupError)
#: Failures after the request may have gone out.
MAYBE_SENT = (
    defer.TimeoutError,
    defer.CancelledError,
    ResponseFailed,
    RequestTransmissionFailed,
    error.ConnectionLost,
    error.ConnectionDone,
)


def normalize_endpoint(endpoint: str) -> str:
    """``HOST:PORT`` or ``http(s)://HOST:PORT[/path]`` as a base URL without
    a trailing slash."""
    text = endpoint.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad endpoint {endpoint!r}: want HOST:PORT or http(s)://HOST:PORT")
    return text.rstrip("/")


def split_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """Endpoints given as one comma-separated string or a sequence."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    found = [normalize_endpoint(e) for e in items if e.strip()]
    if not found:
        raise ValueError("no endpoint given")
    return found


def decode_body(raw: bytes) -> Any:
    """A gateway answer: JSON, or for a stream (keep-alive) its first line
    unwrapped from ``{"result": ...}``; text that is not JSON stays text."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return {}
    first = text.split("\n", 1)[0]
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(first)
    except ValueError:
        return text


class _FirstLine(protocol.Protocol):
    """Reads a streamed body up to its first newline (or its end), then
    drops the connection: ``done`` fires with those bytes."""

    def __init__(self) -> None:
        self.buffer = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer and not self.done.called:
            self.done.callback(self.buffer.split(b"\n", 1)[0])
            self.transport.stopProducing()  # type: ignore[union-attr]  # a response body's transport

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.buffer)


class Transport:
    """POSTs to the first endpoint that answers (see the module's rules)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        reactor: Any,
        *,
        timeout: float = 15.0,
        attempt_timeout: float = 5.0,
        retry_writes: bool = True,
        http: HTTPClient | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.endpoints = split_endpoints(endpoints)
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retry_writes = retry_writes
        self.pool = web_client.HTTPConnectionPool(reactor, persistent=True)
        agent = (
            web_client.Agent(reactor, pool=self.pool)
            if tls is None
            else web_client.Agent(reactor, contextFactory=tls.policy(), pool=self.pool)
        )
        self.http = http or HTTPClient(agent)
        #: Index of the endpoint tried first.
        self.current = 0

    def rotate(self) -> None:
        """Try the next endpoint first from now on."""
        self.current = (self.current + 1) % len(self.endpoints)

    async def _attempt(
        self, url: str, data: bytes, headers: dict[bytes | str, list[bytes | str]], timeout: float, first_line: bool
    ) -> tuple[int, Any]:
        d = self.http.post(url, data=data, headers=headers, reactor=self.reactor, unbuffered=first_line)
        d.addTimeout(timeout, self.clock)
        response: IResponse = await d
        if first_line and response.code == 200:
            reader = _FirstLine()
            response.deliverBody(reader)
            body = reader.done
        else:
            body = treq.content(response)
        body.addTimeout(timeout, self.clock)
        raw: bytes = await body
        return response.code, decode_body(raw)

    async def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        write: bool = False,
        timeout: float | None = None,
        first_line: bool = False,
    ) -> Any:
        """The decoded JSON answer to POST body at path, within timeout
        seconds (default: the transport's). With first_line, the answer is
        a stream and only its first line is read (then the connection is
        dropped). Raises a DkvClientError subclass."""
        data = json.dumps(body).encode()
        headers = dict(JSON_HEADERS)
        if write:
            headers[IDEMPOTENCY_HEADER] = [str(uuid.uuid4())]
        deadline = self.clock.seconds() + (self.timeout if timeout is None else timeout)
        maybe_applied = False
        last: DkvClientError | None = None
        pause = 0.05
        while True:
            for _ in range(len(self.endpoints)):
                remaining = deadline - self.clock.seconds()
                if remaining <= 0:
                    break
                endpoint = self.endpoints[self.current]
                try:
                    status, answer = await self._attempt(
                        endpoint + path, data, headers, min(remaining, self.attempt_timeout), first_line
                    )
                except NOT_SENT as e:
                    last = Unreachable(f"cannot reach {endpoint}: {e}")
                    self.rotate()
                    continue
                except MAYBE_SENT as e:
                    reason = f"no answer from {endpoint}: {type(e).__name__}"
                    if write and not self.retry_writes:
                        raise OutcomeUnknown(reason) from None
                    maybe_applied = maybe_applied or write
                    last = OutcomeUnknown(reason) if write else Unreachable(reason)
                    self.rotate()
                    continue
                if status == 200:
                    return answer
                failure = from_answer(status, answer)
                if isinstance(failure, NoLeader):
                    last = failure if not maybe_applied else OutcomeUnknown(failure.message, failure.code, status)
                    self.rotate()
                    continue
                if isinstance(failure, OutcomeUnknown):
                    if write and not self.retry_writes:
                        raise failure
                    maybe_applied = maybe_applied or write
                    last = failure
                    self.rotate()
                    continue
                raise failure
            if deadline - self.clock.seconds() <= 0:
                raise last or Unreachable("no endpoint answered in time")
            await task.deferLater(self.clock, min(pause, max(0.0, deadline - self.clock.seconds())), lambda: None)
            pause = min(pause * 2, 1.0)

    async def open_stream(self, endpoint: str, path: str, body: dict[str, Any]) -> IResponse:
        """Open a streaming POST (a watch) on one endpoint: the response,
        its body not yet read. Raises what ``call`` would for one attempt:
        NOT_SENT / MAYBE_SENT failures as they are, an error answer as a
        DkvClientError."""
        d = self.http.post(
            endpoint + path, data=json.dumps(body).encode(), headers=dict(JSON_HEADERS), unbuffered=True,
            reactor=self.reactor,
        )  # fmt: skip
        d.addTimeout(self.attempt_timeout, self.clock)
        response: IResponse = await d
        if response.code != 200:
            raw = treq.content(response)
            raw.addTimeout(self.attempt_timeout, self.clock)
            raise from_answer(response.code, decode_body(await raw))
        return response

    def close(self) -> defer.Deferred[None]:
        """Close the idle pooled connections."""
        return self.pool.closeCachedConnections()
