# test-case-name: tests.test_launcher
"""One request to a node's REST API, and the API's base64, for harness code
that runs without a reactor."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from typing import Any

from dkv.api.b64 import encode as b64_encode


def b64(data: bytes | str) -> str:
    """data (text as UTF-8) as the API writes base64."""
    return b64_encode(data.encode() if isinstance(data, str) else data)


def unb64(text: str) -> bytes:
    """The bytes of the API's (standard) base64 text."""
    return base64.b64decode(text)


def http_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """One HTTP request on a fresh connection (HTTPS with context):
    (status, decoded JSON body).

    A body that is not JSON comes back as ``{"raw": text}``. Connection
    errors and timeouts raise (OSError / http.client.HTTPException)."""
    conn = (
        http.client.HTTPConnection(host, port, timeout=timeout)
        if context is None
        else http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    )
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw.decode("utf-8", "replace")}
        return resp.status, data
    finally:
        conn.close()
