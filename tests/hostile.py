"""Shared pieces of the hostile-input tests (test_hostile_rest, test_fuzz_http,
test_hostile_grpc): one real ``dkv`` process, a raw HTTP/1.1 client that
sends exactly the bytes it is given, a cursor over the node's log, and the
expected answer to any ``POST /v0/kv`` body, written from the README.

Synchronous on purpose (plain sockets, no reactor): a request that hangs or
kills the node cannot take the test process with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, settings

from dkv.testing.launcher import NodeConfig, NodeProcess, free_node_ports
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64

#: Small configured limits, so that sizes around them are cheap to explore.
#: 1024-byte keys straddle LMDB's 511-byte key limit (long keys are stored
#: hashed), 32 KiB bodies stay well above the 16 KiB HTTP header limit.
MAX_KEY = 1024
MAX_BODY = 32 * 1024

#: status -> gRPC code of an error answer (README's error table; 409 is the
#: membership API's refusal, e.g. removing the last voter).
ERROR_CODES = {400: 3, 404: 5, 405: 12, 408: 4, 409: 9, 413: 8, 431: 8, 503: 14, 504: 4}


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible (derandomized, no example database), no deadline: every
    example is a real network round trip."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# -- raw HTTP ----------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Malformed(AssertionError):
    """What the server sent is not a sequence of HTTP/1.1 responses."""


def parse_replies(data: bytes, head: bool = False) -> list[Reply]:
    """Every response in data (interim 1xx answers dropped). Each must carry
    its length (dkv never answers chunked) and data must end with the last."""
    replies: list[Reply] = []
    rest = data
    while rest:
        head_end = rest.find(b"\r\n\r\n")
        if head_end < 0:
            raise Malformed(f"truncated response head: {rest[:300]!r}")
        lines = rest[:head_end].decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
        if not m:
            raise Malformed(f"bad status line {lines[0]!r}")
        status = int(m.group(1))
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise Malformed(f"bad header line {line!r}")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        rest = rest[head_end + 4 :]
        if 100 <= status < 200:
            continue
        if head or status in (204, 304):
            length = 0
        else:
            if "content-length" not in headers:
                raise Malformed(f"{status} answer without Content-Length: {headers}")
            length = int(headers["content-length"][0])
        if len(rest) < length:
            raise Malformed(f"body of {len(rest)} bytes, Content-Length {length}")
        replies.append(Reply(status, headers, rest[:length]))
        rest = rest[length:]
    return replies


def exchange(port: int, data: bytes, head: bool = False, timeout: float = 15.0) -> list[Reply]:
    """Send data on a fresh connection and read until the server closes it
    (callers send ``Connection: close``, or a request the server rejects and
    closes on). The replies, parsed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data)
        received = read_until_closed(s)
    return parse_answers(received, head)


def parse_answers(data: bytes, head: bool = False) -> list[Reply]:
    """parse_replies, for the answers to a request that may be HEAD: a HEAD
    request the server could not parse far enough to know it was HEAD gets
    the full error answer, body included."""
    try:
        return parse_replies(data, head)
    except Malformed:
        if not head:
            raise
    replies = parse_replies(data)
    assert [r.status for r in replies] == [400], replies
    return replies


def read_until_closed(s: socket.socket) -> bytes:
    """Everything until EOF (a reset after a complete answer counts as EOF;
    the socket's timeout fails the test)."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def http_request(
    method: bytes | str,
    target: bytes | str,
    body: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    version: bytes = b"HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """One request as bytes, closing the connection after it."""
    enc = lambda x: x if isinstance(x, bytes) else x.encode("latin-1")  # noqa: E731
    lines = [b"%s %s %s" % (enc(method), enc(target), version), b"Host: 127.0.0.1"]
    for name, value in headers or []:
        lines.append(name + b": " + value)
    if body is not None and content_length:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def assert_json_error(reply: Reply, head: bool = False) -> dict[str, Any]:
    """A 4xx answer of the API: JSON ``{"error": str, "code": int}`` with the
    code of its status. For HEAD only the headers can be checked."""
    assert 400 <= reply.status < 500, reply
    assert reply.header("content-type") == "application/json", reply
    if head:
        return {}
    try:
        body = reply.json()
    except ValueError:
        raise AssertionError(f"{reply.status} answer is not JSON: {reply.body[:300]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert type(body["code"]) is int, body
    assert body["code"] == ERROR_CODES[reply.status], (reply.status, body)
    return body


# -- the node's log ------------------------------------------------------------------

_REJECTED = re.compile(r"^\S+ \[dkv\.api\.(?:rest|grpc)#info\] rejected ", re.MULTILINE)
_TROUBLE = re.compile(r"Traceback|Unhandled|internal error|#critical\]|#error\]")


class LogCursor:
    """Reads what a node logged since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")


_API_LINE = re.compile(r"^\S+ \[(?:dkv\.api|twisted\.web)[\w.]*#", re.MULTILINE)


def rejections(text: str) -> int:
    """How many rejected requests text logs."""
    return len(_REJECTED.findall(text))


def api_lines(text: str) -> list[str]:
    """The lines of text logged by the API layers and Twisted Web: what a
    request can make a node log (replication's own lines are not counted)."""
    return [line for line in text.splitlines() if _API_LINE.match(line)]


def assert_no_trouble(text: str) -> None:
    found = _TROUBLE.search(text)
    assert found is None, f"the node logged trouble:\n{text[max(0, found.start() - 500) : found.start() + 2000]}"


# -- the node ------------------------------------------------------------------------


@attrs.define
class Node:
    proc: NodeProcess
    rest_port: int
    rpc_port: int
    log: LogCursor
    #: Keys written at start; no hostile request may change them.
    sentinels: dict[bytes, bytes]

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.proc.request(method, path, body, timeout=15.0)

    def status(self) -> dict[str, Any]:
        code, st = self.request("GET", "/v0/status")
        assert code == 200, (code, st)
        return st

    def indexes(self) -> tuple[int, int, int]:
        """(last, commit, applied): any write moves them."""
        st = self.status()
        return st["last_index"], st["commit_index"], st["applied_index"]

    def put(self, key: bytes, value: bytes) -> None:
        assert self.request("POST", "/v0/kv", {"key": b64(key), "value": b64(value)}) == (200, {})

    def read(self, key: bytes) -> bytes | None:
        """The key's value from this node's state (serializable read), None if absent."""
        path = "/v0/kv/key/" + base64.urlsafe_b64encode(key).decode() + "?consistency=serializable"
        code, body = self.request("GET", path)
        if code == 404:
            return None
        assert code == 200, (code, body)
        return base64.b64decode(body["value"])

    def assert_healthy(self) -> None:
        """Alive, sentinels intact, a linearizable write and read served, and
        nothing alarming in the log."""
        assert self.proc.alive, f"the node died (exit {self.proc.returncode}):\n{self.proc.log_tail()}"
        for key, value in self.sentinels.items():
            assert self.read(key) == value, key
        self.put(b"health-check", b"ok %d" % time.monotonic_ns())
        code, body = self.request("GET", "/v0/kv/key/" + b64(b"health-check"))
        assert code == 200 and base64.b64decode(body["value"]).startswith(b"ok "), (code, body)
        self.log.new()  # the health check's own requests log nothing; move past them
        assert_no_trouble(self.proc.log_text())


def start_node(directory: Path) -> Iterator[Node]:
    """A one-node cluster in a real ``dkv`` process with MAX_KEY / MAX_BODY,
    leading and holding the sentinel keys; killed when the generator closes."""
    [(rpc, rest)] = free_node_ports(1)
    log_path = directory / "node.log"
    config = NodeConfig(
        node_id="a", cluster=f"a@127.0.0.1:{rpc}", rpc_port=rpc, rest_port=rest, db_path=directory / "node.db",
        log_level="info", tick_ms=20, extra_args=("--max-key-size", str(MAX_KEY), "--max-body-size", str(MAX_BODY)),
    )  # fmt: skip
    proc = NodeProcess.from_config(config, log_path, cwd=directory, name="hostile")
    try:
        try:
            proc.start()
            proc.wait_ready(30)
            wait_until(lambda: (st := proc.try_status()) and st["role"] == "leader", 15, "the node to lead")
            node = Node(proc, rest, rpc, LogCursor(log_path), {})
            for i, value in enumerate([b"", b"\x00\xff" * 50, bytes(range(256))]):
                key = b"sentinel/%d/\xfa\xfb\xfc" % i
                node.put(key, value)
                node.sentinels[key] = value
            node.log.new()
        except Exception:
            sys.stderr.write(f"----- log of the node ({log_path}) -----\n{proc.log_tail(80)}\n")
            raise
        yield node
    finally:
        proc.close()


# -- what POST /v0/kv must answer ------------------------------------------------------


@attrs.frozen
class Expected:
    status: int
    key: bytes | None = None  # for 200: what was written
    value: bytes | None = None


def decode_b64(text: str) -> bytes | None:
    """grpc-gateway's bytes: standard or URL-safe alphabet, padding optional
    (README); None if text is not that."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
        return None
    core = text.rstrip("=")
    if len(core) % 4 == 1:
        return None
    try:
        return base64.b64decode(core.replace("-", "+").replace("_", "/") + "=" * (-len(core) % 4), validate=True)
    except binascii.Error:
        return None


def expected_put(body: bytes, max_key: int = MAX_KEY, max_body: int = MAX_BODY) -> Expected:
    """The answer to ``POST /v0/kv`` with this body, by the README."""
    if len(body) > max_body:
        return Expected(413)
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return Expected(400)
    if not isinstance(obj, dict):
        return Expected(400)
    fields = []
    for name in ("key", "value"):
        if not isinstance(obj.get(name), str):
            return Expected(400)
        decoded = decode_b64(obj[name])
        if decoded is None:
            return Expected(400)
        fields.append(decoded)
    key, value = fields
    if not key:
        return Expected(400)
    if len(key) > max_key:
        return Expected(413)
    return Expected(200, key, value)
