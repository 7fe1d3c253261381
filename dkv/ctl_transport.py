# test-case-name: tests.test_ctl_transport,tests.test_ctl
"""How ``dkvctl`` reaches a cluster: one JSON request over HTTP to the first
of its endpoints that can be reached.

An endpoint is ``HOST:PORT`` or ``http(s)://HOST:PORT``; several are given
comma-separated. With TLS files (``--cacert``, ``--cert``, ``--key``) an
endpoint without a scheme is ``https``. The next endpoint is tried only when connecting to one
fails (refused, unreachable, timed out before the connection was made): then
nothing was sent, so no request is ever applied twice. Once connected, a
failure is reported, not retried elsewhere.

Errors are ``CtlError``: one line for people, and the exit status --
1 when the server refused (its ``{"error", "code"}`` answer), 2 when no
endpoint could be reached or the answer was cut off.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

#: Exit statuses.
REFUSED = 1
UNREACHABLE = 2


class CtlError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def split_endpoints(text: str) -> list[str]:
    """The endpoints in a comma-separated list (blanks ignored)."""
    endpoints = [part.strip() for part in text.split(",") if part.strip()]
    if not endpoints:
        raise CtlError("no endpoint given", UNREACHABLE)
    return endpoints


class _NotConnected(Exception):
    """Connecting failed: nothing was sent."""


def ssl_context(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """HTTPS settings from etcdctl's ``--cacert``, ``--cert`` and ``--key``
    (None when none is given): trust cacert (else the system's CAs) and
    present cert. Raises CtlError for files it cannot use."""
    if not (cacert or cert or key):
        return None
    if bool(cert) != bool(key):
        raise CtlError("give --cert and --key together", REFUSED)
    try:
        context = ssl.create_default_context(cafile=cacert or None)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise CtlError(f"cannot use the TLS files: {e}", REFUSED) from None
    return context


def _connection(
    endpoint: str, timeout: float, tls: ssl.SSLContext | None = None
) -> tuple[http.client.HTTPConnection, str]:
    """An unconnected connection to endpoint, and the path prefix its URL
    carries. An endpoint without a scheme is https when tls is given."""
    default = "https" if tls is not None else "http"
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"{default}://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CtlError(f"bad endpoint {endpoint!r}: want HOST:PORT or http(s)://HOST:PORT", UNREACHABLE)
    try:
        port = parts.port
    except ValueError:
        raise CtlError(f"bad endpoint {endpoint!r}: the port is not a number", UNREACHABLE) from None
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=tls
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    return conn, parts.path.rstrip("/")


def _send(
    conn: http.client.HTTPConnection, endpoint: str, method: str, path: str, body: Any
) -> http.client.HTTPResponse:
    """Connect (raising _NotConnected) and send the request; its response."""
    try:
        conn.connect()
    except ssl.SSLError as e:  # connected, but TLS failed: no other endpoint will do better
        raise CtlError(f"TLS with {endpoint} failed: {e}", UNREACHABLE) from None
    except OSError as e:
        raise _NotConnected(str(e)) from None
    data = None if body is None else json.dumps(body).encode()
    headers = {} if data is None else {"content-type": "application/json"}
    try:
        conn.request(method, path, body=data, headers=headers)
        return conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        raise CtlError(f"cannot reach {endpoint}: {e or type(e).__name__}", UNREACHABLE) from None


def _refusal(status: int, reason: str, raw: bytes) -> CtlError:
    try:
        answer = json.loads(raw) if raw.strip() else {}
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        return CtlError(f"{answer['error']} (HTTP {status}, code {answer.get('code')})", REFUSED)
    return CtlError(f"HTTP {status} {reason}", REFUSED)


def _once(endpoint: str, method: str, path: str, body: Any, timeout: float, tls: ssl.SSLContext | None) -> Any:
    conn, prefix = _connection(endpoint, timeout, tls)
    try:
        resp = _send(conn, endpoint, method, prefix + path, body)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise CtlError(f"cannot reach {endpoint}: {e or type(e).__name__}", UNREACHABLE) from None
    finally:
        conn.close()
    if not 200 <= resp.status < 300:
        raise _refusal(resp.status, resp.reason, raw)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise CtlError(f"{endpoint} did not answer JSON (HTTP {resp.status})", REFUSED) from None


@contextlib.contextmanager
def stream(
    endpoints: Sequence[str],
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[str, http.client.HTTPResponse]]:
    """The first endpoint that can be reached and its 2xx response, unread,
    for one ``with`` block (a long answer is read as it comes), over HTTPS
    with tls as ``request``. A refusal raises CtlError as ``request`` does;
    so does an unreachable cluster."""
    failures = []
    for endpoint in endpoints:
        conn, prefix = _connection(endpoint, timeout, tls)
        try:
            try:
                resp = _send(conn, endpoint, method, prefix + path, body)
            except _NotConnected as e:
                failures.append((endpoint, str(e)))
                continue
            if not 200 <= resp.status < 300:
                try:
                    raw = resp.read()
                except (OSError, http.client.HTTPException):
                    raw = b""
                raise _refusal(resp.status, resp.reason, raw)
            yield endpoint, resp
            return
        finally:
            conn.close()
    tried = ", ".join(endpoint for endpoint, _ in failures)
    raise CtlError(f"cannot reach {tried}: {failures[-1][1] if failures else 'no endpoint'}", UNREACHABLE)


def request(
    endpoints: Sequence[str],
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """The decoded JSON answer of the first endpoint that can be reached
    (``{}`` for an empty one), over HTTPS with tls (see ``ssl_context``).
    Raises CtlError."""
    failures = []
    for endpoint in endpoints:
        try:
            return _once(endpoint, method, path, body, timeout, tls)
        except _NotConnected as e:
            failures.append((endpoint, str(e)))
    tried = ", ".join(endpoint for endpoint, _ in failures)
    raise CtlError(f"cannot reach {tried}: {failures[-1][1] if failures else 'no endpoint'}", UNREACHABLE)
