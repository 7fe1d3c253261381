# test-case-name: tests.watch.test_watch_api,tests.watch.test_sse
"""dkv's own watch: ``GET /v0/watch`` as Server-Sent Events.

Query: ``key`` (base64, required; may be empty with ``prefix=true`` or a
``range_end``: every key), ``prefix=true`` (every key starting with key),
``range_end`` (base64; ``AA==``, the byte 0, means every key from key),
``start_revision`` (replay the history from there, then follow; default:
from the next revision), ``prev_kv=true``. A ``Last-Event-ID`` header (what
a browser's ``EventSource`` sends when it reconnects) resumes after that
revision and wins over ``start_revision``.

The answer is ``text/event-stream``: one event per change, its ``data`` a
JSON object ``{"type": "PUT"|"DELETE", "key", "value", "create_revision",
"mod_revision", "version", "lease"}`` (bytes as base64; ``prev_kv`` too when
asked); the last event of each revision carries ``id: <revision>``, so a
resume never splits a revision. A comment line (``: keep-alive``) every
``WatchSettings.sse_keepalive`` seconds keeps proxies from closing a quiet stream. A start
below the compacted revision answers one ``event: compacted`` with ``data:
{"compact_revision": N}`` and ends.
"""

from __future__ import annotations

import json
from typing import Any

from dkv.api import b64
from dkv.api.http_common import Call, StreamAnswer
from dkv.api.watch_gateway import start_session
from dkv.auth.node_auth import v0_error
from dkv.auth.permissions import Access
from dkv.errors import InvalidArgument
from dkv.mvcc.errors import EtcdError
from dkv.node import Node
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from dkv.pb.etcd_rpc_pb2 import WatchCreateRequest, WatchRequest, WatchResponse

#: The comment written every ``WatchSettings.sse_keepalive`` seconds.
KEEPALIVE = b": keep-alive\n\n"
_HEADERS = ((b"Cache-Control", b"no-cache"), (b"X-Accel-Buffering", b"no"))


def _arg(call: Call, name: str) -> str | None:
    values = call.args.get(name.encode())
    return values[-1].decode("utf-8", "replace") if values else None


def _flag(call: Call, name: str) -> bool:
    value = _arg(call, name)
    if value is None:
        return False
    if value.lower() not in ("true", "false", "1", "0", ""):
        raise InvalidArgument(f"{name} must be true or false")
    return value.lower() in ("true", "1", "")


def _revision(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be a revision (a whole number >= 0)") from None
    if value < 0:
        raise InvalidArgument(f"{what} must be a revision (a whole number >= 0)")
    return value


def prefix_end(key: bytes) -> bytes:
    """etcd's range end for every key starting with key (``"\\0"``: all)."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def parse(call: Call) -> WatchCreateRequest:
    """The watch a query asks for (raises InvalidArgument)."""
    raw_key = _arg(call, "key")
    if raw_key is None:
        raise InvalidArgument("missing query parameter 'key'")
    key = b64.decode(raw_key, "key")
    create = WatchCreateRequest(key=key, prev_kv=_flag(call, "prev_kv"))
    raw_end = _arg(call, "range_end")
    if raw_end is not None:
        create.range_end = b64.decode(raw_end, "range_end")
    elif _flag(call, "prefix"):
        create.range_end = prefix_end(key)
    if create.range_end and create.range_end != b"\x00" and key >= create.range_end:
        raise InvalidArgument("range_end must be after key")
    if not create.range_end and not key:
        raise InvalidArgument("key must not be empty (use prefix=true to watch every key)")
    start = _arg(call, "start_revision")
    if start is not None:
        create.start_revision = _revision(start, "start_revision")
    last = call.headers.get(b"last-event-id")
    if last:
        create.start_revision = _revision(last[-1].decode("latin-1").strip(), "Last-Event-ID") + 1
    return create


def _kv(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": b64.encode(kv.key),
        "value": b64.encode(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def event_json(event: Event) -> dict[str, Any]:
    body = {"type": "DELETE" if event.type == Event.DELETE else "PUT", **_kv(event.kv)}
    if event.HasField("prev_kv"):
        body["prev_kv"] = _kv(event.prev_kv)
    return body


def render(response: WatchResponse) -> tuple[bytes, bool]:
    """A session answer as SSE text, and whether the stream ends."""
    if response.compact_revision:
        data = json.dumps({"compact_revision": response.compact_revision})
        return f"event: compacted\ndata: {data}\n\n".encode(), True
    if response.created:
        return b": watching, revision %d\n\n" % response.header.revision, False
    out = []
    events = response.events
    for i, event in enumerate(events):
        revision = event.kv.mod_revision
        last_of_revision = i + 1 == len(events) or events[i + 1].kv.mod_revision != revision
        line = json.dumps(event_json(event), separators=(",", ":"))
        out.append((f"id: {revision}\n" if last_of_revision else "") + f"data: {line}\n\n")
    return "".join(out).encode(), False


def watch(node: Node, call: Call) -> StreamAnswer:
    """``GET /v0/watch``: 401 / 403 before the stream starts if the user may
    not read the range."""
    request = WatchRequest(create_request=parse(call))
    create = request.create_request
    try:
        node.authorize([(Access.READ, create.key, create.range_end)])
    except EtcdError as e:
        raise v0_error(e) from None
    return StreamAnswer(200, b"text/event-stream", start_session(node, request, render, KEEPALIVE), _HEADERS)
