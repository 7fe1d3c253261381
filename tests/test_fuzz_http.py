"""Raw-TCP fuzzing of the REST port of a real ``dkv`` process: random bytes,
mangled request lines and headers, truncated requests, slowloris-style
partial requests, byte-at-a-time requests, garbage in a pipeline.

Whatever arrives, the node answers only with well-formed HTTP (4xx as JSON
errors, each logged once), writes nothing it should not, keeps serving
other clients meanwhile, stays alive, and logs no traceback. Inputs come
from a fixed seed, so every run sends the same bytes.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import time
from collections.abc import Iterator

import attrs
import pytest

from dkv.testing.cluster import b64
from tests.hostile import (
    Node,
    api_lines,
    assert_json_error,
    http_request,
    parse_answers,
    parse_replies,
    read_until_closed,
    rejections,
    start_node,
)

pytestmark = pytest.mark.process

SEED = 20240611
#: Connections opened at once: well under Twisted's listen backlog (50), so
#: that no SYN is dropped and retried a second later.
BATCH = 40


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory.mktemp("fuzz-http"))


# -- many connections at once ---------------------------------------------------------


@attrs.define
class Conn:
    sock: socket.socket
    received: bytearray = attrs.Factory(bytearray)
    closed: bool = False  # the server closed (or reset) it


def open_all(port: int, payloads: list[bytes]) -> list[Conn]:
    """One connection per payload, each payload sent in full."""
    conns = []
    for payload in payloads:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if payload:
            s.sendall(payload)
        s.setblocking(False)
        conns.append(Conn(s))
    return conns


def open_in_batches(node: Node, payloads: list[bytes]) -> list[Conn]:
    """open_all, BATCH connections at a time; a status request between
    batches lets the node accept them before the next batch arrives."""
    conns: list[Conn] = []
    for i in range(0, len(payloads), BATCH):
        conns += open_all(node.rest_port, payloads[i : i + BATCH])
        node.status()
    return conns


def read_all(conns: list[Conn], timeout: float) -> None:
    """Read every connection until the server closes it, or until timeout
    seconds have passed (the connections still open then stay open)."""
    with selectors.DefaultSelector() as sel:
        for c in conns:
            if not c.closed:
                sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = time.monotonic() + timeout
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    c.received += data
                else:
                    c.closed = True
                    sel.unregister(c.sock)


def close_all(conns: list[Conn]) -> None:
    for c in conns:
        c.sock.close()


def pending(c: Conn) -> bytes:
    """What has arrived on c so far, without waiting."""
    try:
        data = c.sock.recv(65536)
    except BlockingIOError:
        return bytes(c.received)
    if not data:
        c.closed = True
    c.received += data
    return bytes(c.received)


# -- inputs -------------------------------------------------------------------------------

READ_TEMPLATES = [
    http_request(b"GET", b"/v0/status"),
    http_request(b"GET", b"/v0/kv/key/" + b64(b"fuzz").encode()),
    http_request(b"GET", b"/v0/kv/key/" + b64(b"fuzz").encode() + b"?consistency=serializable"),
    http_request(b"HEAD", b"/v0/status"),
    http_request(b"OPTIONS", b"/v0/kv"),
    http_request(b"GET", b"/v0/kv/key/%2F%2F%2F%2F", b"{}", [(b"Content-Type", b"application/json")]),
]
#: Methods a mangled request line may get: none of them can write.
READ_METHODS = [b"GET", b"HEAD", b"OPTIONS", b"get", b"G", b"GETT", b"", b"\x00", b"PUT", b"PATCH", b"TRACE"]


def mangle_first_line(rnd: random.Random, request: bytes) -> bytes:
    """request with its request line damaged in one of a dozen ways."""
    line, sep, rest = request.partition(b"\r\n")
    kind = rnd.randrange(12)
    if kind == 0:  # flip bytes
        b = bytearray(line)
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        line = bytes(b)
    elif kind == 1:  # insert bytes
        at = rnd.randrange(len(line) + 1)
        line = line[:at] + rnd.randbytes(rnd.randint(1, 4)) + line[at:]
    elif kind == 2:  # delete bytes
        at = rnd.randrange(len(line))
        line = line[:at] + line[at + rnd.randint(1, 5) :]
    elif kind == 3:  # another method
        line = rnd.choice(READ_METHODS) + line[line.index(b" ") :]
    elif kind == 4:  # another version
        version = rnd.choice([b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 x", b"HTTP/", b"\xff"])
        line = line.rsplit(b" ", 1)[0] + b" " + version
    elif kind == 5:  # more or other whitespace
        line = line.replace(b" ", rnd.choice([b"  ", b"\t", b" \t ", b"\x0b", b"\r"]))
    elif kind == 6:  # CR LF doubled or reversed
        return (line + sep + rest).replace(b"\r\n", rnd.choice([b"\r\n\r\n", b"\n\r"]), 1)
    elif kind == 7:  # tokens dropped or duplicated
        tokens = line.split(b" ")
        line = b" ".join(rnd.choice([tokens[:-1], tokens[1:], tokens + tokens[-1:], tokens[:1] + tokens]))
    elif kind == 8:  # a very long target
        line = line.replace(b" /", b" /" + b"A" * rnd.choice([8000, 16384, 17000, 40000]), 1)
    elif kind == 9:  # raw control or high bytes in the target
        line = line.replace(b" /", b" /" + bytes([rnd.choice([0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x0A])]), 1)
    elif kind == 10:  # a bad percent-escape in the target
        line = line.replace(b" /", b" /" + rnd.choice([b"%", b"%G", b"%FF", b"%C3%28", b"%00", b"%ED%A0%80"]), 1)
    else:  # no Host header
        return line + b"\r\nConnection: close\r\n\r\n"
    return line + sep + rest


def mangle_headers(rnd: random.Random, request: bytes) -> bytes:
    """request with one header line added or damaged."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    bad = rnd.choice([
        b"No-Colon", b": no name", b"Bad Name: x", b"X: \x00\xff", b"\xff\xfe: y", b" continuation",
        b"Content-Length: -1", b"Content-Length: 1e3", b"Content-Length: 0x10", b"Content-Length: 2, 2",
        b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked, gzip",
        b"Host: a\r\nHost: b", b"X: " + b"v" * rnd.choice([100, 16000, 17000]), b"Expect: 100-continue",
        b"Expect: something-else", b"Upgrade: h2c", b"Content-Type: multipart/form-data",
    ])  # fmt: skip
    lines.insert(rnd.randint(1, len(lines)), bad)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def garbage_payloads(rnd: random.Random) -> list[bytes]:
    """Inputs the node must answer with an error (or serve, if a mangling
    happened to leave a valid read) and then close."""
    payloads = []
    for _ in range(120):  # random bytes, mostly ended like a request head
        payloads.append(rnd.randbytes(rnd.randint(1, 3000)) + b"\r\n\r\n")
    for _ in range(40):  # printable junk, like a confused client
        text = bytes(rnd.choice(b"GETPOST/ \t:HTTP1.0abc%?=&\r\n") for _ in range(rnd.randint(1, 200)))
        payloads.append(text + b"\r\n\r\n")
    for _ in range(140):
        payloads.append(mangle_first_line(rnd, rnd.choice(READ_TEMPLATES)))
    for _ in range(60):
        payloads.append(mangle_headers(rnd, rnd.choice(READ_TEMPLATES)))
    return payloads


def write_requests() -> list[bytes]:
    return [
        http_request(b"POST", b"/v0/kv", json.dumps({"key": b64(b"trunc"), "value": b64(b"x" * 50)}).encode()),
        http_request(b"POST", b"/v0/kv", json.dumps({"key": b64(b"trunc"), "value": b64(b"y")}).encode(),
                     [(b"Transfer-Encoding", b"chunked")], content_length=False).replace(
            b"\r\n\r\n{", b"\r\n\r\n1000\r\n{", 1),  # a chunk of 4 KiB that never arrives in full
        http_request(b"DELETE", b"/v0/kv/key/" + b64(b"sentinel/0/\xfa\xfb\xfc").encode()),
    ]  # fmt: skip


# -- tests ---------------------------------------------------------------------------------


def test_garbage_over_raw_tcp(node: Node) -> None:
    """Hundreds of connections of garbage at once, plus truncated writes that
    never complete: well-formed answers only, each rejection logged once,
    nothing written, the node serving throughout."""
    rnd = random.Random(SEED)
    garbage = garbage_payloads(rnd)
    truncated = []
    for _ in range(100):  # writes cut anywhere before their end: never complete
        request = rnd.choice(write_requests())
        truncated.append(request[: rnd.randrange(1, len(request) - 1)])
    for request in write_requests():  # lines ended by a bare LF: malformed (400), never written
        garbage.append(request.replace(b"\r\n", b"\n"))
    before = node.indexes()

    hanging = open_in_batches(node, truncated)
    conns: list[Conn] = []
    for i in range(0, len(garbage), BATCH):
        batch = open_all(node.rest_port, garbage[i : i + BATCH])
        read_all(batch, timeout=10)
        conns += batch

    answered, rejected, head_404 = 0, 0, 0
    for payload, c in zip(garbage, conns, strict=True):
        head = payload.startswith(b"HEAD ")
        replies = parse_answers(bytes(c.received), head=head)
        # Two answers when a mangling ended the request early and the rest
        # was read as a second one (the first lacking "Connection: close").
        assert len(replies) <= 2, (payload[:200], replies)
        for reply in replies:
            answered += 1
            assert reply.status < 500, (payload[:200], reply)
            if reply.status >= 400:
                body = assert_json_error(reply, head=head and not reply.body)
                if head and reply.status == 404 and not reply.body:
                    head_404 += 1  # a missing route (logged) or key (not logged): HEAD cannot tell
                else:
                    rejected += body.get("error") != "key not found"
    close_all(conns)
    assert answered >= 0.95 * len(garbage), f"only {answered} of {len(garbage)} got an answer"
    assert rejected >= 0.8 * len(garbage)

    # The truncated writes are still waiting for the rest, unanswered, and
    # the node serves others meanwhile.
    assert [pending(c) for c in hanging] == [b""] * len(hanging)
    assert not any(c.closed for c in hanging)
    assert node.indexes() == before
    node.put(b"during", b"slow clients")
    assert node.read(b"during") == b"slow clients"
    before = node.indexes()
    close_all(hanging)

    logged = node.log.new()  # each rejection logged exactly once, nothing else
    assert rejected <= rejections(logged) <= rejected + head_404, (rejected, head_404, logged[-3000:])
    assert len(api_lines(logged)) == rejections(logged), logged[-3000:]
    assert node.indexes() == before
    assert node.read(b"trunc") is None
    node.assert_healthy()


def test_slowloris(node: Node) -> None:
    """A hundred clients each dribbling a partial request: other clients are
    served meanwhile; the half that finish their requests get the right
    answers; the half that give up write nothing and log nothing."""
    requests = [
        http_request(b"POST", b"/v0/kv", json.dumps({"key": b64(b"slow-%d" % i), "value": b64(b"v%d" % i)}).encode())
        for i in range(100)
    ]
    cut = [len(r) // 2 + (i % 7) for i, r in enumerate(requests)]  # each stops in its headers or body
    pieces = [[r[k * n // 8 : (k + 1) * n // 8] for k in range(8)] for r, n in zip(requests, cut, strict=True)]
    conns = open_in_batches(node, [p[0] for p in pieces])
    for step in range(1, 8):  # a few more bytes each, one send at a time
        for p, c in zip(pieces, conns, strict=True):
            c.sock.send(p[step])
    node.put(b"meanwhile", b"served")
    assert node.read(b"meanwhile") == b"served"
    assert node.status()["role"] == "leader"
    before = node.indexes()
    assert [pending(c) for c in conns] == [b""] * len(conns)

    finishing = list(range(0, 100, 2))
    for i in finishing:
        conns[i].sock.setblocking(True)
        conns[i].sock.sendall(requests[i][cut[i] :])
    done = [conns[i] for i in finishing]
    read_all(done, timeout=15)
    for i in finishing:
        assert [(r.status, r.json()) for r in parse_replies(bytes(conns[i].received))] == [(200, {})], i
    close_all(conns)

    after = node.indexes()
    assert after[0] == before[0] + len(finishing)
    for i in range(100):
        assert node.read(b"slow-%d" % i) == (b"v%d" % i if i in finishing else None)
    assert api_lines(node.log.new()) == []
    node.assert_healthy()


def test_one_byte_at_a_time(node: Node) -> None:
    """A valid write sent one byte per send() is served like any other."""
    request = http_request(b"POST", b"/v0/kv", json.dumps({"key": b64(b"dribble"), "value": b64(b"\x00\xff")}).encode())
    with socket.create_connection(("127.0.0.1", node.rest_port), timeout=15) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            s.send(request[i : i + 1])
        replies = parse_replies(read_until_closed(s))
    assert [(r.status, r.json()) for r in replies] == [(200, {})]
    assert node.read(b"dribble") == b"\x00\xff"
    assert api_lines(node.log.new()) == []


def test_garbage_in_a_pipeline(node: Node) -> None:
    """Requests pipelined on one connection with garbage in the middle: the
    ones before it are served in order, the garbage gets a JSON 400 and the
    connection closes; nothing after it is executed."""
    keep_alive = lambda raw: raw.replace(b"Connection: close\r\n", b"")  # noqa: E731
    put = lambda k, v: keep_alive(  # noqa: E731
        http_request(b"POST", b"/v0/kv", json.dumps({"key": b64(k), "value": b64(v)}).encode())
    )
    pipeline = (
        put(b"pipe-1", b"one")
        + keep_alive(http_request(b"GET", b"/v0/kv/key/" + b64(b"pipe-1").encode()))
        + keep_alive(http_request(b"GET", b"/v0/kv/key/" + b64(b"pipe-absent").encode()))
        + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"  # a TLS ClientHello, more or less
        + put(b"pipe-2", b"two")
    )
    with socket.create_connection(("127.0.0.1", node.rest_port), timeout=15) as s:
        s.sendall(pipeline)
        replies = parse_replies(read_until_closed(s))
    assert [(r.status, r.json()) for r in replies] == [
        (200, {}),
        (200, {"key": b64(b"pipe-1"), "value": b64(b"one")}),
        (404, {"error": "key not found", "code": 5}),
        (400, {"error": "malformed HTTP request", "code": 3}),
    ]
    assert node.read(b"pipe-2") is None
    logged = node.log.new()
    assert rejections(logged) == 1 and len(api_lines(logged)) == 1, logged
    node.assert_healthy()
