# test-case-name: tests.test_front_door,tests.test_rest
"""What the two REST stacks share, so that they answer alike: the front door
(``dkv.api.front_door``, which serves the REST port) and the Klein site
(``dkv.api.rest``, the home of the full API, rendered by the front door for
every request it does not serve itself).

Both import this module and ``dkv.api.routes``; the Klein site never
imports the front door.

Every error answer is ``{"error": reason, "code": grpc_code}`` with the HTTP
status of its ``dkv.errors`` class, and every rejected request is logged
once, at info for a client's mistake and at debug for the cluster's state
(5xx), under the namespace ``dkv.api.rest``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from dkv.errors import DkvError, KeyNotFound
from dkv.logs import logger

log = logger("dkv.api.rest")

#: Bytes of a request line and its header lines (twisted.web's totalHeadersSize).
#: More is answered 431.
MAX_HEAD_BYTES = 16 * 1024
#: Header fields in one request (twisted.web's maxHeaders). More is answered 431.
MAX_HEADERS = 500

#: Reason phrases of the answers written by ``closing_answer``.
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


class Call:
    """What a route's handler may read of a request: its body, its query
    arguments (``parse_qs`` of the query, blank values kept) and the path
    parameters."""

    __slots__ = ("body", "args", "params")

    def __init__(self, body: bytes, args: dict[bytes, list[bytes]], params: dict[str, str]) -> None:
        self.body = body
        self.args = args
        self.params = params


@attrs.frozen
class RawAnswer:
    """A handler's answer that is not dkv's JSON: a status and an encoded
    JSON body as they are (etcd's gateway answers, errors included)."""

    status: int
    body: bytes


def encode_json(body: Any) -> bytes:
    """body as compact JSON."""
    return json.dumps(body, separators=(",", ":")).encode()


def error_body(error: DkvError) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": error.message, "code": error.grpc_code}


def log_rejection(method: str, path: str, error: DkvError) -> None:
    """Log a request the API rejected, once. "Key not found" is an answer,
    not a mistake, and is not logged."""
    if isinstance(error, KeyNotFound):
        return
    # Client mistakes are logged at info; 5xx (no leader, unknown outcome)
    # are the cluster's state, logged by replication, so debug here.
    emit = log.debug if error.http_status >= 500 else log.info
    emit(
        "rejected {method} {path}: {status} {error}",
        method=method,
        path=path[:200],
        status=error.http_status,
        error=error.message,
    )


def log_refused_request(peer: str, error: DkvError) -> None:
    """Log, once, a request refused before it reached the API (it could not
    be parsed, was too large, or too slow); the connection closes."""
    log.info(
        "rejected HTTP request from {peer}: {status} {error}", peer=peer, status=error.http_status, error=error.message
    )


def closing_answer(error: DkvError, head: bool = False) -> bytes:
    """The whole answer to a request refused at the HTTP level, announcing
    that the connection closes. Without the body if the request was HEAD."""
    body = encode_json(error_body(error))
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        error.http_status,
        _REASONS.get(error.http_status, b"Error"),
        len(body),
        b"" if head else body,
    )


def wants_close(version: bytes, connection: Iterable[bytes]) -> bool:
    """Whether the connection closes after the answer to a request of this
    HTTP version with these ``Connection`` header values: always after
    HTTP/1.0 (as twisted.web does), after HTTP/1.1 when a value names the
    token ``close`` (any case, in a list separated by commas or spaces)."""
    if version != b"HTTP/1.1":
        return True
    for value in connection:
        for token in value.replace(b",", b" ").split():
            if token.lower() == b"close":
                return True
    return False
