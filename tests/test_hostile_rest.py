"""Hostile input against the REST API of a real ``dkv`` process.

The rule: a bad request (malformed JSON, bad base64, oversize body, unknown
route, wrong type, odd method, header or path) gets a 4xx with a JSON body
``{"error": str, "code": int}``, is logged once, and changes nothing; a
node never dies of a request and never answers 5xx for a client mistake
(503/504 cannot happen on a healthy single node).

Property tests (hypothesis, derandomized) send bodies, paths, methods and
headers over raw sockets, one request per connection, and check after
every request: the status (exactly, where the README decides it), the
error body, the log lines it caused, and the log indexes (a rejected
request moves nothing; an accepted write moves them by one and is
readable). Deterministic tests pin the answers to malformed HTTP.
"""

from __future__ import annotations

import base64
import json
import random
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from tests.hostile import (
    MAX_BODY,
    MAX_KEY,
    Expected,
    Node,
    Reply,
    api_lines,
    assert_json_error,
    exchange,
    expected_put,
    fuzz_settings,
    http_request,
    parse_replies,
    read_until_closed,
    rejections,
    start_node,
)

pytestmark = pytest.mark.process

MAX_LINE = 16384  # the limit on the request line and headers


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory.mktemp("hostile-rest"))


# -- checking one request -----------------------------------------------------------


def send_and_check(node: Node, raw: bytes, method: bytes, head: bool = False) -> tuple[Reply, int]:
    """Send one raw request; check the invariants every answer must satisfy:
    one answer, never 5xx, 4xx as JSON errors logged exactly once, 2xx and
    "key not found" not logged at all, and the log indexes unmoved unless
    the request was a POST or DELETE answered 200, which may move them by
    one. The answer, and by how much the log moved."""
    before = node.indexes()
    try:
        replies = exchange(node.rest_port, raw, head=head)
    finally:
        logged = node.log.new()  # also when the exchange fails: one failure must not fail the next example
    after = node.indexes()

    assert len(replies) == 1, (raw[:300], replies)
    reply = replies[0]
    if currently_in_test_context():
        event(f"status {reply.status}")
    assert reply.status < 500, (raw[:300], reply)

    if reply.status >= 400:
        body = assert_json_error(reply, head)
        key_not_found = reply.status == 404 and (head or body["error"] == "key not found")
    else:
        assert reply.status == 200, (raw[:300], reply)
        key_not_found = False
    lines = api_lines(logged)
    if reply.status >= 400 and not key_not_found:
        assert rejections(logged) == 1 and len(lines) == 1, (raw[:300], reply, logged)
    elif not (head and reply.status == 404):  # HEAD cannot tell a route from a key 404
        assert lines == [], (raw[:300], reply, logged)

    moved = after[0] - before[0]
    if reply.status == 200 and method.upper() in (b"POST", b"DELETE"):
        # A put or delete writes one entry; a no-op on the membership API
        # (promoting a voter, transferring leadership to the leader) none.
        assert moved in (0, 1) and after[0] == after[1] == after[2], (raw[:300], reply, before, after)
    else:
        assert after == before, (raw[:300], reply, before, after)
    return reply, moved


def check_put(node: Node, answer: tuple[Reply, int], expected: Expected) -> None:
    """answer (from send_and_check) answers a POST /v0/kv that should have been expected."""
    reply, moved = answer
    assert reply.status == expected.status, (reply, expected)
    if expected.status == 200:
        assert reply.json() == {}
        assert moved == 1
        assert expected.key is not None
        assert node.read(expected.key) == expected.value


# -- strategies -----------------------------------------------------------------------


def sized_bytes(n: int, seed: int) -> bytes:
    """n random bytes (large sizes are cheaper this way than st.binary)."""
    return random.Random(seed).randbytes(n)


key_bytes = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.builds(
        sized_bytes,
        st.sampled_from([511, 512, 513, MAX_KEY - 1, MAX_KEY, MAX_KEY + 1, MAX_KEY + 4]),
        st.integers(0, 2**32),
    ),
)
value_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(
        sized_bytes,
        st.sampled_from([1000, 10_000, (MAX_BODY - 100) * 3 // 4, MAX_BODY - 40, MAX_BODY]),
        st.integers(0, 2**32),
    ),
)

ENCODINGS = {
    "standard": lambda b: base64.b64encode(b).decode(),
    "standard, no padding": lambda b: base64.b64encode(b).decode().rstrip("="),
    "url-safe": lambda b: base64.urlsafe_b64encode(b).decode(),
    "url-safe, no padding": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
}

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["", "=", "==", "QQ", "QQ=", "QQ==", "QQ===", "Q", "\u00e9", "\ud800", "QQ==\n"]),
)  # fmt: skip
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> bytes:
    """A valid put body (random alphabet and padding, sizes around the key and
    body limits) with at most one thing wrong with it."""
    key, value = draw(key_bytes), draw(value_bytes)
    encode = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))]
    fields: dict[str, object] = {"key": encode(key), "value": encode(value)}
    mangle = draw(st.sampled_from([
        "none", "drop field", "field type", "bad character", "drop character", "extra padding",
        "empty key", "extra field", "mixed alphabets", "truncate", "trailing garbage", "in a list",
        "utf-16", "utf-8 bom", "duplicate field", "whitespace padded to size", "huge string",
    ]))  # fmt: skip
    name = draw(st.sampled_from(["key", "value"]))
    if mangle == "drop field":
        del fields[name]
    elif mangle == "field type":
        fields[name] = draw(json_values.filter(lambda v: not isinstance(v, str)))
    elif mangle in ("bad character", "drop character", "extra padding"):
        text = str(fields[name])
        at = draw(st.integers(0, len(text)))
        if mangle == "bad character":
            text = text[:at] + draw(st.sampled_from(list("!*.:; \t\n\"\\\u00e9\x00\ud800%"))) + text[at:]
        elif mangle == "drop character":
            text = text[:at] + text[at + 1 :]
        else:
            text += "=" * draw(st.integers(1, 4))
        fields[name] = text
    elif mangle == "empty key":
        fields["key"] = draw(st.sampled_from(["", "=", "=="]))
    elif mangle == "extra field":
        fields[draw(st.text(max_size=8))] = draw(json_values)
    elif mangle == "mixed alphabets":
        fields[name] = "-/" + str(fields[name])[2:] if len(str(fields[name])) >= 2 else "-/"
    elif mangle == "huge string":
        fields[name] = "A" * draw(st.sampled_from([MAX_BODY - 30, MAX_BODY, 4 * MAX_BODY, 1024 * 1024]))
    raw = json.dumps(fields).encode()
    if mangle == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif mangle == "trailing garbage":
        raw += draw(st.sampled_from([b"x", b"}", b",", b"\x00", b"{}", b"\xff"]))
    elif mangle == "in a list":
        raw = b"[" + raw + b"]"
    elif mangle == "utf-16":
        raw = raw.decode().encode("utf-16")
    elif mangle == "utf-8 bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mangle == "duplicate field":
        raw = b'{"%s": %s, ' % (name.encode(), json.dumps(draw(json_values)).encode()) + raw[1:]
    elif mangle == "whitespace padded to size":
        size = draw(st.sampled_from([MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, MAX_BODY + 5000]))
        raw = raw + b" " * max(0, size - len(raw))
    return raw


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"key": json_values, "value": json_values}).map(lambda v: json.dumps(v).encode()),
    near_valid_bodies(),
    near_valid_bodies(),
)


# -- properties ------------------------------------------------------------------------


@fuzz_settings(300)
@given(body=bodies)
def test_post_random_bodies(node: Node, body: bytes) -> None:
    """Any body: exactly the README's answer; rejected ones change nothing,
    accepted ones write exactly what they say."""
    raw = http_request("POST", "/v0/kv", body, [(b"Content-Type", b"application/json")])
    check_put(node, send_and_check(node, raw, b"POST"), expected_put(body))


SEGMENTS = [
    "v0", "kv", "key", "status", "..", ".", "", "%2e%2e", "%2E.", "%2F", "%2f", "%00", "%FF", "%C3%28",
    "%E2%82", "%ED%A0%80", "%", "%G1", "%%", "%zz", "~", "*", ";", "@", ":", "+", "=", "==", "&", "\\",
    "QQ==", "QQ", "////", "+/A=", "-_", "%3F", "%23", "%20", "%0A", "%0D%0A", "a%2Fb",
]  # fmt: skip
PREFIXES = ["/v0/kv/key/", "/v0/kv/", "/v0/", "/", "//", "/v0/status", "/v0/kv", "", "*", "http://x/v0/kv/key/"]


@st.composite
def route_targets(draw: st.DrawFn) -> bytes:
    """A target of a real route (status, put, a key in any encoding), maybe
    with a query: what makes odd methods meet real handlers."""
    route = draw(st.sampled_from([
        "/v0/status", "/v0/kv", "key", "key", "key", "/v0/members", "/v0/members/a", "/v0/members/zz",
        "/v0/members/a/promote", "/v0/members/zz/promote", "/v0/leader/transfer",
    ]))  # fmt: skip
    if route == "key":
        encoded = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))](draw(key_bytes))
        if draw(st.booleans()):
            encoded = quote(encoded, safe="")
        route = "/v0/kv/key/" + encoded
    if draw(st.integers(0, 3)) == 0:
        route += "?consistency=" + draw(st.sampled_from(["serializable", "linearizable", "Serializable", "x", ""]))
    return route.encode()


@st.composite
def odd_targets(draw: st.DrawFn) -> bytes:
    """A request target: route-like prefixes, then segments of route words,
    base64, percent-escapes (also of invalid UTF-8), dot segments, empty
    segments, raw bytes; sometimes a query, sometimes very long."""
    segment = st.one_of(
        st.sampled_from(SEGMENTS),
        st.builds(
            lambda b, enc: ENCODINGS[enc](b), st.binary(min_size=1, max_size=30), st.sampled_from(sorted(ENCODINGS))
        ),
        st.binary(min_size=1, max_size=12).map(lambda b: "".join(f"%{c:02X}" for c in b)),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"), max_size=12),
    )
    parts = draw(st.lists(segment, max_size=6))
    target = (draw(st.sampled_from(PREFIXES)) + "/".join(parts)).encode("latin-1")
    if draw(st.integers(0, 9)) == 0:
        target += draw(st.binary(min_size=1, max_size=4))  # raw bytes: controls, high bytes, spaces
    if draw(st.booleans()):
        query = draw(st.one_of(
            st.sampled_from(["consistency=serializable", "consistency=linearizable", "consistency=", "consistency",
                             "consistency=%FF", "consistency=serializable&consistency=x", "x=%FF", "&&", "=", "%"]),
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=20),
        ))  # fmt: skip
        target += b"?" + query.encode()
    if draw(st.integers(0, 7)) == 0:
        length = draw(st.sampled_from([4000, MAX_LINE - 100, MAX_LINE, MAX_LINE + 100, 20_000]))
        target = (target + b"A" * length)[:length]
    return target


METHOD_KINDS = {
    "main": st.sampled_from([b"GET", b"DELETE", b"HEAD", b"POST"]),
    "named": st.sampled_from([b"PUT", b"PATCH", b"OPTIONS", b"TRACE", b"CONNECT", b"get", b"Delete", b"post",
                              b"PROPFIND", b"BREW"]),
    "token": st.text("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1,
                     max_size=24).map(str.encode),
    "bytes": st.binary(min_size=1, max_size=8),
}  # fmt: skip
#: Half the methods are the API's own, the rest odd ones.
methods = st.sampled_from(["main"] * 3 + ["named", "token", "bytes"]).flatmap(METHOD_KINDS.__getitem__)


@fuzz_settings(300)
@given(
    method=methods,
    target=st.booleans().flatmap(lambda route: route_targets() if route else odd_targets()),
    body=st.one_of(st.none(), st.just(b"{}"), near_valid_bodies()),
)
def test_random_methods_and_paths(node: Node, method: bytes, target: bytes, body: bytes | None) -> None:
    """Any method and path: never 5xx; errors are JSON, logged once; only a
    write answered 200 changes anything."""
    raw = http_request(method, target, body)
    head = method == b"HEAD"
    reply, _ = send_and_check(node, raw, method, head=head)
    if reply.status == 200 and target != b"*" and not head:
        content_type = reply.header("content-type") or ""
        marker = NOT_JSON.get(content_type.partition(";")[0])
        if marker is not None:  # only the status page and the metrics answer other than JSON
            assert marker in reply.body, (raw[:300], reply)
            return
        assert content_type == "application/json", reply
        assert isinstance(reply.json(), dict)


#: The answers that are not JSON, by content type, and what each must hold:
#: the status page (``GET /``) and the metrics (``GET /metrics``).
NOT_JSON = {"text/html": b"<html", "text/plain": b"dkv_"}


CONTENT_TYPES = [
    None, b"application/json", b"text/plain", b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=bogus", b"multipart/form-data; boundary=x",
    b"multipart/form-data", b"application/json; charset=utf-16", b"\xff\xfe\x00", b"", b";;;=", b"*/*",
]  # fmt: skip
FRAMINGS = [
    "content-length", "content-length short", "no length", "chunked", "chunked, bad size", "chunked and length",
    "two lengths, same", "two lengths, different", "length not a number", "negative length", "length +",
]  # fmt: skip
CLEAN_FRAMINGS = {"content-length", "content-length short", "chunked"}


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """body in chunks of the given sizes (cycled), then the last chunk."""
    out, i, n = [], 0, 0
    while i < len(body):
        size = max(1, sizes[n % len(sizes)]) if sizes else len(body)
        out.append(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]))
        i, n = i + size, n + 1
    return b"".join(out) + b"0\r\n\r\n"


header_names = st.one_of(
    st.sampled_from([b"X-Junk", b"Accept", b"Cookie", b"Authorization", b"Host", b"Connection", b"Upgrade",
                     b"Content-Encoding", b"Range", b"X-Forwarded-For", b"Expect"]),
    st.binary(min_size=1, max_size=10),
)  # fmt: skip
header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.encode),
    st.binary(max_size=20),
    st.sampled_from([MAX_LINE - 200, MAX_LINE, MAX_LINE + 10]).map(lambda n: b"v" * n),
)


@fuzz_settings(250)
@given(
    body=st.one_of(near_valid_bodies(), st.binary(max_size=100)),
    framing=st.sampled_from(FRAMINGS),
    chunk_sizes=st.lists(st.integers(1, 5000), max_size=4),
    short_by=st.integers(1, 50),
    content_type=st.sampled_from(CONTENT_TYPES),
    expect_continue=st.booleans(),
    extra=st.lists(st.tuples(header_names, header_values), max_size=3),
    version=st.sampled_from([b"HTTP/1.1"] * 3 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1"]),
)
def test_post_with_random_headers(
    node: Node,
    body: bytes,
    framing: str,
    chunk_sizes: list[int],
    short_by: int,
    content_type: bytes | None,
    expect_continue: bool,
    extra: list[tuple[bytes, bytes]],
    version: bytes,
) -> None:
    """Bogus Content-Type, Content-Length that lies or repeats, chunked
    bodies good and bad, Expect: 100-continue, junk and huge headers, odd
    HTTP versions: the usual invariants always, and where the framing is
    sound the README's exact answer for the body as the server read it."""
    headers: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    if expect_continue:
        headers.append((b"Expect", b"100-continue"))
    headers += extra
    payload, effective = body, body
    if framing == "content-length":
        headers.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "content-length short":
        effective = body[: max(0, len(body) - short_by)]
        headers.append((b"Content-Length", b"%d" % len(effective)))
    elif framing == "no length":
        effective = b""
    elif framing.startswith("chunked"):
        headers.append((b"Transfer-Encoding", b"chunked"))
        payload = chunked(body, chunk_sizes)
        if framing == "chunked, bad size":
            payload = b"zz\r\n" + payload
        elif framing == "chunked and length":
            headers.append((b"Content-Length", b"%d" % len(payload)))
    elif framing.startswith("two lengths"):
        other = len(body) if framing.endswith("same") else len(body) + 1
        headers += [(b"Content-Length", b"%d" % len(body)), (b"Content-Length", b"%d" % other)]
    else:
        value = {"length not a number": b"ten", "negative length": b"-1", "length +": b"+%d" % len(body)}[framing]
        headers.append((b"Content-Length", value))
    raw = http_request(b"POST", b"/v0/kv", payload, headers, version=version, content_length=False)
    answer = send_and_check(node, raw, b"POST")

    sound = (
        framing in CLEAN_FRAMINGS
        and version in (b"HTTP/1.1", b"HTTP/1.0")
        and not extra
        and not (framing == "chunked" and version == b"HTTP/1.0")
    )
    if not sound:
        return
    if content_type is not None and any((c < 0x20 and c != 0x09) or c == 0x7F for c in content_type):
        # A control character in a field value is not HTTP: llhttp refuses it (twisted.web takes it).
        assert answer[0].status == 400, (raw[:400], answer)
        return
    if content_type is not None and content_type.startswith(b"multipart/form-data") and effective:
        # Twisted parses multipart bodies; a JSON body is not one.
        assert answer[0].status == 400, (raw[:400], answer)
        return
    try:
        check_put(node, answer, expected_put(effective))
    except AssertionError as e:  # name the request: hypothesis's report may not show it
        raise AssertionError(f"{e}\nrequest: {raw[:400]!r}") from None


# -- malformed HTTP: exact answers (regressions) ----------------------------------------

MALFORMED_HTTP = {
    "content-length not a number": b"POST /v0/kv HTTP/1.1\r\nContent-Length: ten\r\n\r\n{}",
    "negative content-length": b"POST /v0/kv HTTP/1.1\r\nContent-Length: -2\r\n\r\n{}",
    "two different content-lengths": b"POST /v0/kv HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "chunk size not hex": b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunked and content-length": (
        b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ),
    "unknown transfer-encoding": b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    "request line without version": b"GET /v0/status\r\n\r\n",
    "unknown HTTP version": b"GET /v0/status HTTP/9.9\r\n\r\n",
    "raw bytes in the path": b"GET /v0/kv/key/\xff\xfe HTTP/1.1\r\n\r\n",
    "header without colon": b"GET /v0/status HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
    "binary garbage": b"\x00\x01\x02\xff\xfe\r\n\r\n",
    "multipart body that is JSON": (
        b"POST /v0/kv HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 29\r\n\r\n"
        b'{"key":"QQ==","value":"QQ=="}'
    ),
    "header name with a space": b"GET /v0/status HTTP/1.1\r\nBad Name: x\r\n\r\n",
    "bare LF line ends": b"GET /v0/status HTTP/1.1\nHost: x\n\n",
    "HTTP/2.0 request line": b"GET /v0/status HTTP/2.0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED_HTTP))
def test_malformed_http_gets_a_json_400(node: Node, case: str) -> None:
    """What the parser rejects gets a 400 with the JSON error, logged once,
    and the connection closes."""
    reply, _ = send_and_check(node, MALFORMED_HTTP[case], b"?")
    assert reply.status == 400
    assert reply.json() == {"error": "malformed HTTP request", "code": 3}
    assert reply.header("connection") == "close"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"GET /" + b"a" * (2 * MAX_LINE) + b" HTTP/1.1\r\n\r\n", f"request line and headers exceed {MAX_LINE} bytes"),
        (b"GET /v0/status HTTP/1.1\r\nX: " + b"a" * (2 * MAX_LINE) + b"\r\n\r\n",
         f"request line and headers exceed {MAX_LINE} bytes"),
        (b"GET /v0/status HTTP/1.1\r\n" + b"X: %s\r\n" % (b"a" * 9000) * 2 + b"\r\n",
         f"request line and headers exceed {MAX_LINE} bytes"),
        (b"GET /v0/status HTTP/1.1\r\n" + b"X: a\r\n" * 1000 + b"\r\n", "more than 500 header fields"),
    ],
    ids=["request line", "one header", "all headers", "too many headers"],
)  # fmt: skip
def test_oversize_request_head_gets_a_json_431(node: Node, raw: bytes, error: str) -> None:
    """Request line and headers over 16 KiB, or over 500 header fields: 431
    (RESOURCE_EXHAUSTED), logged once, and the connection closes."""
    reply, _ = send_and_check(node, raw, b"GET")
    assert (reply.status, reply.json()) == (431, {"error": error, "code": 8})
    assert reply.header("connection") == "close"


def test_head_with_undecodable_path_is_logged_once(node: Node) -> None:
    """HEAD of a path that is not UTF-8: the headers of the GET answer, one
    log line (Twisted used to add a warning for the dropped body)."""
    get, _ = send_and_check(node, http_request(b"GET", b"/v0/kv/key/%FF"), b"GET")
    head, _ = send_and_check(node, http_request(b"HEAD", b"/v0/kv/key/%FF"), b"HEAD", head=True)
    assert get.json() == {"error": "path is not valid UTF-8", "code": 3}
    assert (head.status, head.header("content-length")) == (400, str(len(get.body)))


def test_expect_100_continue(node: Node) -> None:
    """Expect: 100-continue gets the interim answer, then the real one."""
    body = json.dumps({"key": "ZXhwZWN0", "value": "Y29udGludWU="}).encode()
    raw = http_request(b"POST", b"/v0/kv", body, [(b"Expect", b"100-continue")])
    check_put(node, send_and_check(node, raw, b"POST"), Expected(200, b"expect", b"continue"))


@pytest.mark.parametrize("missing", [1, 100, MAX_BODY - 100])
def test_body_shorter_than_content_length(node: Node, missing: int) -> None:
    """A body that never arrives in full: no answer while it is awaited,
    other clients are served meanwhile, and when the client gives up
    nothing was written and nothing logged."""
    body = json.dumps({"key": "c2hvcnQ=", "value": "Ym9keQ=="}).encode()
    with socket.create_connection(("127.0.0.1", node.rest_port), timeout=10) as s:
        s.sendall(http_request(b"POST", b"/v0/kv", body, content_length=False).replace(
            b"Connection: close\r\n", b"Content-Length: %d\r\nConnection: close\r\n" % (len(body) + missing)))
        node.put(b"meanwhile", b"served")  # another client, while this one dangles
        assert node.read(b"meanwhile") == b"served"
        before = node.indexes()
        s.shutdown(socket.SHUT_WR)  # give up: the server sees the end of the stream
        assert read_until_closed(s) == b""
    assert node.indexes() == before
    assert node.read(b"short") is None
    assert api_lines(node.log.new()) == []


@pytest.mark.parametrize("expect_continue", [False, True])
def test_declared_body_over_the_limit_is_refused_before_it_is_sent(node: Node, expect_continue: bool) -> None:
    """A Content-Length over the limit is answered 413 as soon as the
    headers arrive, logged once; the body the client then sends is read and
    dropped (or, with Expect: 100-continue, never asked for: the connection
    closes). Nothing is written."""
    before = node.indexes()
    head = (
        b"POST /v0/kv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (100 * MAX_BODY, b"Expect: 100-continue\r\n" if expect_continue else b"")
    )
    with socket.create_connection(("127.0.0.1", node.rest_port), timeout=10) as s:
        s.sendall(head)
        received = b""
        while b'"code":8}' not in received:
            chunk = s.recv(65536)
            assert chunk, received
            received += chunk
        if not expect_continue:
            s.sendall(b'{"key": "' + b"A" * MAX_BODY)  # dropped as it arrives
            node.put(b"meanwhile", b"served")
            s.shutdown(socket.SHUT_WR)
        received += read_until_closed(s)
    replies = parse_replies(received)
    assert [(r.status, r.json()) for r in replies] == [(413, {"error": f"body exceeds {MAX_BODY} bytes", "code": 8})]
    assert replies[0].header("connection") == ("close" if expect_continue else None)
    logged = node.log.new()
    assert rejections(logged) == 1 and len(api_lines(logged)) == 1, logged
    assert node.indexes()[0] == before[0] + (0 if expect_continue else 1)  # the put of "meanwhile" only


def test_node_survived(node: Node) -> None:
    """After everything above: alive, sentinels intact, serving, no traceback."""
    node.assert_healthy()
