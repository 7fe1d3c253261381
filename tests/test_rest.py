"""The REST API against a real single-node stack over HTTP, served by each
of the two REST stacks (every test runs against both): the front door
(dkv.api.front_door, the REST port of a node) and the Klein app of
dkv.api.rest behind twisted.web's own HTTP channel.

Every request goes through treq to the stack's real port. After each
rejected request the test checks that nothing was written (the log indexes
did not move and the key is absent).

Streaming answers are checked over TCP on each stack too, on a route table
extended with the test's streaming route (``tests.stream_route``).

klein and the reactor are imported inside the tests (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from dkv.config import Limits
from dkv.metrics import NodeMetrics
from tests.api_stacks import start_leaderless_stack, start_stuck_leader_stack
from tests.conftest import REST_STACKS, Stack, rest_factory, start_stack, wait_for
from tests.stream_route import STREAM_PATH, Streams, dechunk

JSON = "application/json"
MAX_KEY = Limits().max_key_bytes
MAX_BODY = Limits().max_body_bytes


# -- helpers -------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int
    content_type: str | None
    body: Any  # the decoded JSON
    headers: Any


def std(data: bytes) -> str:
    """Standard base64 with padding, as the API writes it."""
    return base64.b64encode(data).decode()


def urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


async def request(
    method: str, url: str, body: bytes | None = None, headers: dict[bytes, list[bytes]] | None = None
) -> Reply:
    """One HTTP request on a fresh connection; the reply's body must be JSON."""
    import treq

    resp = await treq.request(method, url.encode("ascii"), data=body, headers=headers, persistent=False)
    raw = await treq.content(resp)
    types = resp.headers.getRawHeaders(b"content-type") or []
    content_type = types[0].decode() if types else None
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise AssertionError(f"{method} {url}: {resp.code} with a body that is not JSON: {raw[:200]!r}") from None
    return Reply(resp.code, content_type, parsed, resp.headers)


async def post_json(stack: Stack, body: Any) -> Reply:
    """POST /v0/kv with body encoded as JSON (bytes are sent as they are)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await request("POST", f"{stack.rest_url}/v0/kv", raw, {b"content-type": [b"application/json"]})


async def put(stack: Stack, key: bytes, value: bytes) -> None:
    """Store key=value through the API, asserting success."""
    reply = await post_json(stack, {"key": std(key), "value": std(value)})
    assert (reply.status, reply.body) == (200, {}), reply


async def get(stack: Stack, path_key: str, query: str = "") -> Reply:
    return await request("GET", f"{stack.rest_url}/v0/kv/key/{path_key}{query}")


async def delete(stack: Stack, path_key: str) -> Reply:
    return await request("DELETE", f"{stack.rest_url}/v0/kv/key/{path_key}")


def indexes(stack: Stack) -> tuple[int, int, int]:
    """(last, commit, applied): they move whenever anything is written."""
    st = stack.node.status()
    return st["last_index"], st["commit_index"], st["applied_index"]


def assert_error(reply: Reply, status: int, code: int, error: str | None = None) -> None:
    """An error reply: JSON {"error", "code"} with the given status."""
    assert reply.status == status, reply
    assert reply.content_type == JSON, reply
    assert set(reply.body) == {"error", "code"}, reply
    assert reply.body["code"] == code, reply
    assert isinstance(reply.body["error"], str) and reply.body["error"], reply
    if error is not None:
        assert reply.body["error"] == error, reply


@pytest.fixture
def rest_log() -> Iterator[list[dict]]:
    """Events logged by dkv.api.rest while the test runs."""
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "dkv.api.rest":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)


def rejections(events: list[dict]) -> list[dict]:
    return [e for e in events if str(e.get("log_format", "")).startswith("rejected")]


@pytest.fixture(params=REST_STACKS)
def rest(request: pytest.FixtureRequest) -> str:
    """The REST stack under test: every test here runs against each."""
    return request.param


@pytest_twisted.async_yield_fixture
async def stack(tmp_path, rest: str) -> AsyncIterator[Stack]:
    s, stoppers = await start_stack(tmp_path, rest=rest)
    try:
        yield s
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.async_yield_fixture
async def small_stack(tmp_path, rest: str) -> AsyncIterator[Stack]:
    """A stack with small, configured limits: 16-byte keys, 256-byte bodies."""
    s, stoppers = await start_stack(tmp_path, limits=Limits(max_key_bytes=16, max_body_bytes=256), rest=rest)
    try:
        yield s
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.async_yield_fixture
async def leaderless(tmp_path, rest: str) -> AsyncIterator[Stack]:
    s, stoppers = await start_leaderless_stack(tmp_path, request_timeout=0.3, rest=rest)
    try:
        yield s
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.async_yield_fixture
async def stuck_leader(tmp_path, rest: str) -> AsyncIterator[Stack]:
    s, stoppers = await start_stuck_leader_stack(tmp_path, request_timeout=0.3, rest=rest)
    try:
        yield s
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


# -- round trips ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_get_delete_round_trip(stack: Stack) -> None:
    key, value = b"greeting", b"hello, world"
    before = indexes(stack)
    await put(stack, key, value)
    after = indexes(stack)
    assert after[0] == before[0] + 1
    # Acknowledged only once durable and applied: the store has it already.
    assert after[1] == after[2] == after[0]
    assert stack.replication.read(key) == value

    for query in ("", "?consistency=linearizable", "?consistency=serializable"):
        reply = await get(stack, std(key), query)
        assert (reply.status, reply.content_type, reply.body) == (
            200,
            JSON,
            {"key": std(key), "value": std(value)},
        ), query

    reply = await delete(stack, std(key))
    assert (reply.status, reply.content_type, reply.body) == (200, JSON, {})
    assert stack.replication.read(key) is None
    assert indexes(stack)[0] == after[0] + 1

    reply = await get(stack, std(key))
    assert_error(reply, 404, 5, "key not found")


@pytest_twisted.ensureDeferred
async def test_overwrite_returns_latest_value(stack: Stack) -> None:
    for i in range(5):
        await put(stack, b"k", b"v%d" % i)
        reply = await get(stack, std(b"k"))
        assert reply.body == {"key": std(b"k"), "value": std(b"v%d" % i)}


@pytest_twisted.ensureDeferred
async def test_empty_value_is_a_value(stack: Stack) -> None:
    await put(stack, b"k", b"")
    reply = await get(stack, std(b"k"))
    assert (reply.status, reply.body) == (200, {"key": std(b"k"), "value": ""})


@pytest_twisted.ensureDeferred
async def test_binary_key_and_value(stack: Stack) -> None:
    key, value = bytes(range(256)), bytes(range(255, -1, -1)) * 4
    await put(stack, key, value)
    reply = await get(stack, quote(std(key), safe=""))
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(value)})


@pytest_twisted.ensureDeferred
async def test_delete_absent_key_succeeds_and_is_written(stack: Stack) -> None:
    before = indexes(stack)
    reply = await delete(stack, std(b"never-written"))
    assert (reply.status, reply.content_type, reply.body) == (200, JSON, {})
    # A delete is a replicated command even when the key is absent.
    assert indexes(stack)[0] == before[0] + 1
    # And deleting twice is fine.
    reply = await delete(stack, std(b"never-written"))
    assert (reply.status, reply.body) == (200, {})


@pytest_twisted.ensureDeferred
async def test_get_absent_key(stack: Stack, rest_log: list[dict]) -> None:
    for query in ("", "?consistency=serializable"):
        reply = await get(stack, std(b"absent"), query)
        assert_error(reply, 404, 5, "key not found")
    # Not found is an answer, not a client mistake: nothing is logged.
    assert rejections(rest_log) == []


# -- keys in the path and in JSON, in both alphabets ---------------------------

PATH_KEYS = [
    b"hello",
    b"\xff\xff\xff",  # "////": starts with "/" and contains "//"
    b"\xfb\xef\xbe",  # "++++"
    b"a\xff\xff\xffb",  # "Yf///2I=": "///" in the middle, padding
    b"\xfb\xf0",  # "+/A="
    b"\xff\xe0",  # "/+A="
    b"\x00",  # "AA=="
    b"?#&%",  # "PyMmJQ=="
    b"\xfa",  # "+g=="
]

def _lower_escapes(text: str) -> str:
    """Percent-escape everything, with lowercase hex digits (%2f, not %2F)."""
    return quote(text, safe="").replace("%2F", "%2f").replace("%2B", "%2b").replace("%3D", "%3d")


PATH_FORMS = {
    "standard, escaped": lambda k: quote(std(k), safe=""),
    "standard, escaped, lowercase escapes": lambda k: _lower_escapes(std(k)),
    "standard, raw": std,
    "standard, no padding": lambda k: std(k).rstrip("="),
    "standard, no padding, escaped": lambda k: quote(std(k).rstrip("="), safe=""),
    "url-safe": urlsafe,
    "url-safe, no padding": lambda k: urlsafe(k).rstrip("="),
}


@pytest.mark.parametrize("form", list(PATH_FORMS))
@pytest.mark.parametrize("key", PATH_KEYS, ids=std)
@pytest_twisted.ensureDeferred
async def test_path_key_forms(stack: Stack, key: bytes, form: str) -> None:
    await put(stack, key, b"value of " + key)
    path_key = PATH_FORMS[form](key)

    reply = await get(stack, path_key)
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(b"value of " + key)}), path_key
    reply = await get(stack, path_key, "?consistency=serializable")
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(b"value of " + key)}), path_key

    reply = await delete(stack, path_key)
    assert (reply.status, reply.body) == (200, {}), path_key
    assert stack.replication.read(key) is None
    assert_error(await get(stack, std(key)), 404, 5, "key not found")


@pytest.mark.parametrize("encode", [std, lambda k: std(k).rstrip("="), urlsafe, lambda k: urlsafe(k).rstrip("=")],
                         ids=["standard", "standard, no padding", "url-safe", "url-safe, no padding"])
@pytest.mark.parametrize("key", PATH_KEYS, ids=std)
@pytest_twisted.ensureDeferred
async def test_json_body_accepts_both_alphabets(stack: Stack, key: bytes, encode) -> None:
    value = b"\xff\xfe\xfd" + key
    reply = await post_json(stack, {"key": encode(key), "value": encode(value)})
    assert (reply.status, reply.body) == (200, {}), reply
    assert stack.replication.read(key) == value
    # Responses always use standard base64 with padding.
    reply = await get(stack, urlsafe(key))
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(value)})


@pytest_twisted.ensureDeferred
async def test_path_key_is_not_query_or_fragment(stack: Stack) -> None:
    """A "+" in the path is a plus, not a space; "%3D" is "="."""
    key = b"\xfb\xef\xbe\xfb"  # "++++ +w=="
    await put(stack, key, b"v")
    reply = await get(stack, "%2B%2B%2B%2B%2Bw%3D%3D")
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(b"v")})
    reply = await get(stack, "+++++w==")
    assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(b"v")})


# -- consistency ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["linearizable", "serializable", "LINEARIZABLE", "Serializable"])
@pytest_twisted.ensureDeferred
async def test_consistency_values(stack: Stack, value: str) -> None:
    await put(stack, b"k", b"v")
    reply = await get(stack, std(b"k"), f"?consistency={value}")
    assert (reply.status, reply.body) == (200, {"key": std(b"k"), "value": std(b"v")})


@pytest.mark.parametrize("value", ["", "strong", "eventual", "1", "linearizable%FF", "serial"])
@pytest_twisted.ensureDeferred
async def test_bad_consistency(stack: Stack, value: str, rest_log: list[dict]) -> None:
    await put(stack, b"k", b"v")
    reply = await get(stack, std(b"k"), f"?consistency={value}")
    assert_error(reply, 400, 3, "consistency must be linearizable or serializable")
    assert len(rejections(rest_log)) == 1


# -- status --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status(stack: Stack) -> None:
    await put(stack, b"k", b"v")
    reply = await request("GET", f"{stack.rest_url}/v0/status")
    assert (reply.status, reply.content_type) == (200, JSON)
    st = reply.body
    assert set(st) == {
        "id", "role", "term", "leader_id", "commit_index", "applied_index", "stored_index",
        "last_index", "first_index", "snapshot_index", "members",
    }
    assert st["id"] == "a"
    assert st["role"] == "leader"
    assert st["leader_id"] == "a"
    assert isinstance(st["term"], int) and st["term"] >= 1
    assert st["commit_index"] == st["applied_index"] == st["last_index"] >= 3
    assert st["stored_index"] <= st["applied_index"]  # the last apply may be held (held_apply)
    assert st["first_index"] == 1
    assert st["snapshot_index"] == 0
    assert st["members"] == [
        {"id": "a", "address": "127.0.0.1:1", "voter": True, "match_index": st["last_index"]}
    ]
    assert st["last_index"] == stack.replication.raft.log.last_index()


@pytest_twisted.ensureDeferred
async def test_status_follows_writes(stack: Stack) -> None:
    first = (await request("GET", f"{stack.rest_url}/v0/status")).body
    await put(stack, b"k", b"v")
    await delete(stack, std(b"k"))
    second = (await request("GET", f"{stack.rest_url}/v0/status")).body
    assert second["last_index"] == first["last_index"] + 2
    assert second["applied_index"] == second["commit_index"] == second["last_index"]
    assert second["term"] == first["term"]


# -- bad requests --------------------------------------------------------------

BAD_BODIES = {
    "malformed JSON": (b'{"key": ', "malformed JSON"),
    "empty body": (b"", "malformed JSON"),
    "not UTF-8": (b'{"key": "\xff"}', "malformed JSON"),
    "trailing garbage": (b'{"key": "QQ==", "value": "QQ=="} x', "malformed JSON"),
    "deep nesting": (b"[" * 100_000, None),
    "list": (b'[{"key": "QQ==", "value": "QQ=="}]', "body must be a JSON object"),
    "string": (b'"QQ=="', "body must be a JSON object"),
    "number": (b"1", "body must be a JSON object"),
    "null": (b"null", "body must be a JSON object"),
    "missing key": (b'{"value": "QQ=="}', "missing field 'key'"),
    "missing value": (b'{"key": "QQ=="}', "missing field 'value'"),
    "empty object": (b"{}", "missing field 'key'"),
    "key is a number": (b'{"key": 1, "value": "QQ=="}', "field 'key' must be a base64 string"),
    "key is null": (b'{"key": null, "value": "QQ=="}', "field 'key' must be a base64 string"),
    "key is a list": (b'{"key": ["QQ=="], "value": "QQ=="}', "field 'key' must be a base64 string"),
    "key is an object": (b'{"key": {}, "value": "QQ=="}', "field 'key' must be a base64 string"),
    "key is a bool": (b'{"key": true, "value": "QQ=="}', "field 'key' must be a base64 string"),
    "value is a number": (b'{"key": "QQ==", "value": 1}', "field 'value' must be a base64 string"),
    "value is null": (b'{"key": "QQ==", "value": null}', "field 'value' must be a base64 string"),
    "value is a list": (b'{"key": "QQ==", "value": []}', "field 'value' must be a base64 string"),
    "key is bad base64": (b'{"key": "Q!==", "value": "QQ=="}', "key is not valid base64"),
    "key has one char": (b'{"key": "Q", "value": "QQ=="}', "key is not valid base64"),
    "key has whitespace": (b'{"key": "QQ ==", "value": "QQ=="}', "key is not valid base64"),
    "value is bad base64": (b'{"key": "QQ==", "value": "QQ=*"}', "value is not valid base64"),
    "value has too much padding": (b'{"key": "QQ==", "value": "QQ==="}', "value is not valid base64"),
    "empty key": (b'{"key": "", "value": "QQ=="}', "key must not be empty"),
    "key of padding only": (b'{"key": "==", "value": "QQ=="}', "key must not be empty"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest_twisted.ensureDeferred
async def test_post_bad_body(stack: Stack, case: str, rest_log: list[dict]) -> None:
    body, error = BAD_BODIES[case]
    before = indexes(stack)
    reply = await post_json(stack, body)
    assert_error(reply, 400, 3)
    if error is not None:
        assert reply.body["error"].startswith(error), reply
    assert indexes(stack) == before
    assert stack.replication.read(b"A") is None
    logged = rejections(rest_log)
    assert len(logged) == 1
    assert logged[0]["log_level"].name == "info"
    assert logged[0]["status"] == 400


@pytest.mark.parametrize(
    ("path_key", "status", "code", "error"),
    [
        ("Q", 400, 3, "key is not valid base64"),
        ("QQ%3D%3D%3D", 400, 3, "key is not valid base64"),
        ("Q!", 400, 3, "key is not valid base64"),
        ("QQ%20%3D%3D", 400, 3, "key is not valid base64"),
        ("QQ==/QQ==", 400, 3, "key is not valid base64"),  # padding in the middle
        ("%C3%A9", 400, 3, "key is not valid base64"),  # é: UTF-8 but not base64
        ("QQ%253D%253D", 400, 3, "key is not valid base64"),  # unescaped once, not twice
        ("%FF", 400, 3, "path is not valid UTF-8"),
        ("QQ%FF", 400, 3, "path is not valid UTF-8"),
        ("", 400, 3, "key must not be empty"),
        ("%3D%3D", 400, 3, "key must not be empty"),
        (std(b"k" * (MAX_KEY + 1)), 413, 8, f"key is {MAX_KEY + 1} bytes; the limit is {MAX_KEY}"),
        # starts with "/" (escaped); 4099 bytes
        (
            quote(std(b"\xff" * 3 + b"k" * MAX_KEY), safe=""),
            413,
            8,
            f"key is {MAX_KEY + 3} bytes; the limit is {MAX_KEY}",
        ),
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest_twisted.ensureDeferred
async def test_bad_path_key(
    stack: Stack, method: str, path_key: str, status: int, code: int, error: str, rest_log: list[dict]
) -> None:
    before = indexes(stack)
    reply = await request(method, f"{stack.rest_url}/v0/kv/key/{path_key}")
    assert_error(reply, status, code, error)
    assert indexes(stack) == before
    logged = rejections(rest_log)
    assert len(logged) == 1
    assert logged[0]["status"] == status


@pytest.mark.parametrize("size", [1, 511, 512, MAX_KEY])
@pytest_twisted.ensureDeferred
async def test_long_keys_up_to_the_limit(tmp_path, size: int, rest: str) -> None:
    """Every key up to max_key_bytes (4 KiB) can be written, read, deleted,
    and the node goes on serving."""
    stack, stoppers = await start_stack(tmp_path, request_timeout=1.0, rest=rest)
    try:
        key = b"\xfe" * size
        reply = await post_json(stack, {"key": std(key), "value": std(b"v")})
        assert (reply.status, reply.body) == (200, {}), reply
        reply = await get(stack, quote(std(key), safe=""))
        assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(b"v")})
        reply = await delete(stack, urlsafe(key).rstrip("="))
        assert (reply.status, reply.body) == (200, {})
        await put(stack, b"after", b"still serving")
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_put_key_over_the_limit(stack: Stack, rest_log: list[dict]) -> None:
    before = indexes(stack)
    reply = await post_json(stack, {"key": std(b"k" * (MAX_KEY + 1)), "value": std(b"v")})
    assert_error(reply, 413, 8, f"key is {MAX_KEY + 1} bytes; the limit is {MAX_KEY}")
    assert indexes(stack) == before
    assert stack.replication.read(b"k" * (MAX_KEY + 1)) is None
    assert [e["status"] for e in rejections(rest_log)] == [413]


def _body_of_size(key: bytes, value: bytes, size: int) -> bytes:
    """A valid put body padded with trailing JSON whitespace to exactly size bytes."""
    raw = json.dumps({"key": std(key), "value": std(value)}).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@pytest_twisted.ensureDeferred
async def test_body_exactly_at_the_limit_is_accepted(stack: Stack) -> None:
    value = b"\x5a" * ((MAX_BODY - 100) * 3 // 4)  # ~1.125 MiB, the largest that fits
    body = _body_of_size(b"big", value, MAX_BODY)
    assert len(body) == MAX_BODY
    reply = await post_json(stack, body)
    assert (reply.status, reply.body) == (200, {})
    reply = await get(stack, std(b"big"))
    assert (reply.status, reply.body) == (200, {"key": std(b"big"), "value": std(value)})


@pytest.mark.parametrize("extra", [1, 100_000])
@pytest_twisted.ensureDeferred
async def test_body_over_the_limit(stack: Stack, extra: int, rest_log: list[dict]) -> None:
    value = b"\x5a" * ((MAX_BODY - 100) * 3 // 4)
    body = _body_of_size(b"big", value, MAX_BODY + extra)
    before = indexes(stack)
    reply = await post_json(stack, body)
    assert_error(reply, 413, 8, f"body exceeds {MAX_BODY} bytes")
    assert indexes(stack) == before
    assert stack.replication.read(b"big") is None
    assert [e["status"] for e in rejections(rest_log)] == [413]


@pytest_twisted.ensureDeferred
async def test_large_values_round_trip(stack: Stack) -> None:
    for size in (64 * 1024, 512 * 1024, 1024 * 1024):
        value = bytes(i % 251 for i in range(size))
        key = b"size-%d" % size
        await put(stack, key, value)
        reply = await get(stack, std(key))
        assert (reply.status, reply.body) == (200, {"key": std(key), "value": std(value)})


@pytest_twisted.ensureDeferred
async def test_configured_limits(small_stack: Stack) -> None:
    stack = small_stack
    # 16-byte keys pass, 17-byte keys do not, in every route.
    await put(stack, b"k" * 16, b"v")
    reply = await get(stack, std(b"k" * 16))
    assert reply.status == 200
    before = indexes(stack)
    assert_error(await post_json(stack, {"key": std(b"k" * 17), "value": ""}), 413, 8,
                 "key is 17 bytes; the limit is 16")
    assert_error(await get(stack, std(b"k" * 17)), 413, 8, "key is 17 bytes; the limit is 16")
    assert_error(await delete(stack, std(b"k" * 17)), 413, 8, "key is 17 bytes; the limit is 16")
    # Bodies of 256 bytes pass, 257 do not.
    assert_error(await post_json(stack, _body_of_size(b"k", b"v" * 100, 257)), 413, 8,
                 "body exceeds 256 bytes")
    assert indexes(stack) == before
    reply = await post_json(stack, _body_of_size(b"k", b"v" * 100, 256))
    assert (reply.status, reply.body) == (200, {})
    assert stack.replication.read(b"k") == b"v" * 100


# -- routes and methods --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/index.html"),  # GET / is the status page
        ("GET", "/v0"),
        ("GET", "/v0/"),
        ("GET", "/v0/kv/key"),
        ("GET", "/v0/kvx"),
        ("GET", "/v1/kv/key/QQ=="),
        ("GET", "/v0/status/extra"),
        ("POST", "/v0/kv/"),
        ("POST", "/nothing/here"),
        ("DELETE", "/v0/kv/keys/QQ=="),
        ("DELETE", "/v0/kv/key"),
        ("GET", "/v0/status/"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unknown_route(stack: Stack, method: str, path: str, rest_log: list[dict]) -> None:
    before = indexes(stack)
    reply = await request(method, stack.rest_url + path)
    assert_error(reply, 404, 5)
    assert reply.body["error"].startswith("no route /"), reply
    assert indexes(stack) == before
    assert [e["status"] for e in rejections(rest_log)] == [404]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v0/kv", {"POST"}),
        ("PUT", "/v0/kv", {"POST"}),
        ("DELETE", "/v0/kv", {"POST"}),
        ("PATCH", "/v0/kv", {"POST"}),
        ("POST", "/v0/kv/key/QQ==", {"GET", "DELETE"}),
        ("PUT", "/v0/kv/key/QQ==", {"GET", "DELETE"}),
        ("POST", "/v0/status", {"GET"}),
        ("DELETE", "/v0/status", {"GET"}),
        ("OPTIONS", "/v0/kv", {"POST"}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_wrong_method(stack: Stack, method: str, path: str, allowed: set[str], rest_log: list[dict]) -> None:
    before = indexes(stack)
    body = json.dumps({"key": std(b"A"), "value": std(b"v")}).encode()
    reply = await request(method, stack.rest_url + path, body)
    assert_error(reply, 405, 12, f"method {method} not allowed")
    allow = {m.strip() for m in reply.headers.getRawHeaders(b"allow", [b""])[0].decode().split(",")}
    assert allowed <= allow, allow  # werkzeug adds HEAD/OPTIONS where it serves them
    assert indexes(stack) == before
    assert stack.replication.read(b"A") is None
    assert [e["status"] for e in rejections(rest_log)] == [405]


# -- concurrency ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_concurrent_puts(stack: Stack) -> None:
    n = 50
    before = indexes(stack)
    replies = await defer.gatherResults(
        [
            defer.ensureDeferred(post_json(stack, {"key": std(b"key-%d" % i), "value": std(b"value-%d" % i)}))
            for i in range(n)
        ]
    )
    assert [(r.status, r.body) for r in replies] == [(200, {})] * n
    assert indexes(stack)[0] == before[0] + n
    reads = await defer.gatherResults(
        [defer.ensureDeferred(get(stack, std(b"key-%d" % i))) for i in range(n)]
    )
    for i, reply in enumerate(reads):
        assert (reply.status, reply.body) == (200, {"key": std(b"key-%d" % i), "value": std(b"value-%d" % i)})


@pytest_twisted.ensureDeferred
async def test_concurrent_mixed_requests(stack: Stack) -> None:
    """Writes, reads and rejected requests at once: each gets its own answer."""
    await put(stack, b"present", b"yes")
    calls = []
    for i in range(20):
        calls.append(post_json(stack, {"key": std(b"c-%d" % i), "value": std(b"%d" % i)}))
        calls.append(get(stack, std(b"present")))
        calls.append(get(stack, std(b"absent-%d" % i), "?consistency=serializable"))
        calls.append(post_json(stack, b"{"))
    replies = await defer.gatherResults([defer.ensureDeferred(c) for c in calls])
    for i in range(20):
        w, r, a, bad = replies[4 * i : 4 * i + 4]
        assert (w.status, w.body) == (200, {})
        assert (r.status, r.body) == (200, {"key": std(b"present"), "value": std(b"yes")})
        assert_error(a, 404, 5, "key not found")
        assert_error(bad, 400, 3)
        assert stack.replication.read(b"c-%d" % i) == b"%d" % i


# -- no leader, unknown outcome ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_no_leader(leaderless: Stack, rest_log: list[dict]) -> None:
    from twisted.internet import reactor

    stack = leaderless
    before = indexes(stack)
    start = reactor.seconds()
    reply = await post_json(stack, {"key": std(b"k"), "value": std(b"v")})
    assert_error(reply, 503, 14, "no leader")
    assert_error(await delete(stack, std(b"k")), 503, 14, "no leader")
    assert_error(await get(stack, std(b"k")), 503, 14, "no leader")
    assert_error(await get(stack, std(b"k"), "?consistency=linearizable"), 503, 14, "no leader")
    # Each waited for a leader for the request timeout (0.3 s here, checked
    # on 0.01 s ticks: a request ends between 0.29 and 0.3 s), no longer.
    assert 4 * 0.29 <= reactor.seconds() - start < 4 * 0.3 + 2
    assert indexes(stack) == before
    assert stack.replication.read(b"k") is None
    # 5xx are the cluster's state: not logged as client mistakes at info.
    assert all(e["log_level"].name == "debug" for e in rejections(rest_log))


@pytest_twisted.ensureDeferred
async def test_no_leader_serializable_read_is_local(leaderless: Stack) -> None:
    assert_error(await get(leaderless, std(b"k"), "?consistency=serializable"), 404, 5, "key not found")


@pytest_twisted.ensureDeferred
async def test_no_leader_status(leaderless: Stack) -> None:
    reply = await request("GET", f"{leaderless.rest_url}/v0/status")
    assert reply.status == 200
    assert reply.body["role"] == "pre-candidate"
    assert reply.body["leader_id"] == ""
    assert [m["id"] for m in reply.body["members"]] == ["a", "b", "c"]
    assert all(m["voter"] for m in reply.body["members"])


@pytest_twisted.ensureDeferred
async def test_no_leader_still_validates_first(leaderless: Stack) -> None:
    assert_error(await post_json(leaderless, b"{"), 400, 3)
    assert_error(await get(leaderless, "Q"), 400, 3, "key is not valid base64")


@pytest_twisted.ensureDeferred
async def test_outcome_unknown(stuck_leader: Stack) -> None:
    from twisted.internet import reactor

    stack = stuck_leader
    start = reactor.seconds()
    reply = await post_json(stack, {"key": std(b"k"), "value": std(b"v")})
    elapsed = reactor.seconds() - start
    assert_error(reply, 504, 4, "outcome unknown")
    assert 0.25 <= elapsed < 5  # after the request timeout (0.3 s), not before
    assert_error(await delete(stack, std(b"k")), 504, 4, "outcome unknown")
    st = stack.node.status()
    assert st["role"] == "leader"
    # Appended, not committed: exactly what "outcome unknown" means.
    assert st["commit_index"] < st["last_index"]
    assert stack.replication.read(b"k") is None


@pytest_twisted.ensureDeferred
async def test_stuck_leader_linearizable_read_times_out(stuck_leader: Stack) -> None:
    """A leader that cannot confirm its leadership with a quorum does not
    serve linearizable reads: 503 within the request timeout."""
    reply = await get(stuck_leader, std(b"k"))
    assert_error(reply, 503, 14)
    assert_error(await get(stuck_leader, std(b"k"), "?consistency=serializable"), 404, 5, "key not found")


# -- unexpected failures -------------------------------------------------------


@attrs.define
class FailingNode:
    """A node whose every call fails with an unexpected exception."""

    limits: Limits = Limits()
    metrics = NodeMetrics()

    def check_write_admission(self) -> None:
        """Admission control admits: the write reaches put."""

    def put(self, key: bytes, value: bytes, *, admitted: bool = False) -> defer.Deferred[None]:
        return defer.fail(RuntimeError("boom"))

    def status(self) -> dict:
        raise RuntimeError("boom")


@pytest_twisted.ensureDeferred
async def test_internal_error_is_json_500(rest_log: list[dict], rest: str) -> None:
    from twisted.internet import reactor

    port = reactor.listenTCP(0, rest_factory(FailingNode(), rest), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}"
        reply = await request("POST", f"{url}/v0/kv", json.dumps({"key": "QQ==", "value": ""}).encode())
        assert_error(reply, 500, 13, "internal error")
        reply = await request("GET", f"{url}/v0/status")
        assert_error(reply, 500, 13, "internal error")
    finally:
        await port.stopListening()
    failures = [e for e in rest_log if "log_failure" in e]
    assert len(failures) == 2
    assert all(e["log_failure"].check(RuntimeError) for e in failures)


# -- the two stacks agree, byte for byte ------------------------------------------------


def _raw(
    method: bytes,
    target: bytes,
    body: bytes | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    version: bytes = b"HTTP/1.1",
    close: bool = True,
) -> bytes:
    """One request as bytes; with close, it asks the server to close after it."""
    lines = [b"%s %s %s" % (method, target, version), b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None and not any(name.lower() == b"transfer-encoding" for name, _ in headers):
        lines.append(b"Content-Length: %d" % len(body))
    if close and version == b"HTTP/1.1":
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def _agreement_corpus() -> dict[str, bytes]:
    """Requests covering every route, error and HTTP feature the tests
    above use, each ending with one that closes the connection."""
    ctype = ((b"Content-Type", b"application/json"),)
    put_body = lambda k, v: json.dumps({"key": std(k), "value": std(v)}).encode()  # noqa: E731
    corpus: dict[str, bytes] = {}
    for key in PATH_KEYS:
        corpus[f"put {std(key)}"] = _raw(b"POST", b"/v0/kv", put_body(key, b"v" + key), ctype)
        for form, encode in PATH_FORMS.items():
            target = b"/v0/kv/key/" + encode(key).encode()
            for query in (b"", b"?consistency=serializable", b"?consistency=Linearizable", b"?consistency=x"):
                corpus[f"get {std(key)} {form} {query!r}"] = _raw(b"GET", target + query)
            corpus[f"head {std(key)} {form}"] = _raw(b"HEAD", target)
        corpus[f"delete {std(key)}"] = _raw(b"DELETE", b"/v0/kv/key/" + quote(std(key), safe="").encode())
        corpus[f"get deleted {std(key)}"] = _raw(b"GET", b"/v0/kv/key/" + urlsafe(key).encode())
    for case, (body, _) in BAD_BODIES.items():
        corpus[f"bad body: {case}"] = _raw(b"POST", b"/v0/kv", body, ctype)
    for path_key in ["Q", "QQ%3D%3D%3D", "Q!", "QQ==/QQ==", "%C3%A9", "%FF", "QQ%FF", "", "%3D%3D", std(b"k" * 65)]:
        for method in (b"GET", b"DELETE", b"HEAD", b"PUT"):
            corpus[f"{method.decode()} path key {path_key!r}"] = _raw(method, b"/v0/kv/key/" + path_key.encode())
    for method, path in [
        ("GET", "/"), ("GET", "/v0/kv/key"), ("GET", "/v0/kvx"), ("GET", "/v0/status/extra"), ("POST", "/v0/kv/"),
        ("DELETE", "/v0/kv/keys/QQ=="), ("GET", "/v0/status/"), ("GET", "/v0/kv"), ("PUT", "/v0/kv"),
        ("PATCH", "/v0/kv"), ("POST", "/v0/kv/key/QQ=="), ("POST", "/v0/status"), ("DELETE", "/v0/status"),
        ("OPTIONS", "/v0/kv"), ("OPTIONS", "*"), ("TRACE", "*"), ("GET", "*"), ("HEAD", "/v0/status"),
        ("GET", "/v0/status?x=1"), ("GET", "/v0/members"), ("POST", "/v0/members/zz/promote"),
        ("DELETE", "/v0/members/zz"), ("POST", "/v0/leader/transfer"), ("GET", "/v0/%FF/x"), ("HEAD", "/nowhere"),
        ("GET", "http://127.0.0.1/v0/status"),
    ]:  # fmt: skip
        corpus[f"{method} {path}"] = _raw(method.encode(), path.encode(), put_body(b"A", b"v"), ctype)
    for body in [b'{"id": "d"}', b'{"id": "d", "address": "x"}', b'{"id": "d", "address": "h:1", "learner": 1}', b"["]:
        corpus[f"add member {body!r}"] = _raw(b"POST", b"/v0/members", body, ctype)
    for body in [b"", b"{}", b'{"to": ""}', b'{"to": 1}', b'{"to": "zz"}']:
        corpus[f"transfer {body!r}"] = _raw(b"POST", b"/v0/leader/transfer", body, ctype)
    corpus["HTTP/1.0 put"] = _raw(b"POST", b"/v0/kv", put_body(b"old", b"1.0"), ctype, version=b"HTTP/1.0")
    corpus["HTTP/1.0 get"] = _raw(b"GET", b"/v0/kv/key/" + std(b"old").encode(), version=b"HTTP/1.0")
    corpus["HTTP/1.0 status"] = _raw(b"GET", b"/v0/status", version=b"HTTP/1.0")
    corpus["keep-alive pipeline"] = (
        _raw(b"POST", b"/v0/kv", put_body(b"p", b"1"), ctype, close=False)
        + _raw(b"GET", b"/v0/kv/key/cA==", close=False)
        + _raw(b"DELETE", b"/v0/kv/key/cA==", close=False)
        + _raw(b"GET", b"/v0/kv/key/cA==?consistency=serializable", close=False)
        + _raw(b"GET", b"/v0/members", close=False)
        + _raw(b"POST", b"/v0/kv", b"{", ctype, close=False)
        + _raw(b"GET", b"/v0/kv/key/cA==")
    )
    both = ((b"Connection", b"keep-alive, close"),)
    corpus["connection: keep-alive, close"] = _raw(b"GET", b"/v0/status", headers=both, close=False)
    expect = ((b"Expect", b"100-continue"),)
    corpus["expect 100-continue"] = _raw(b"POST", b"/v0/kv", put_body(b"e", b"c"), (*ctype, *expect))
    corpus["expect on HTTP/1.0"] = _raw(b"POST", b"/v0/kv", put_body(b"e", b"c"), expect, version=b"HTTP/1.0")
    body = put_body(b"chunked", b"body")
    corpus["chunked put"] = _raw(
        b"POST", b"/v0/kv", b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]),
        ((b"Transfer-Encoding", b"chunked"),),
    )  # fmt: skip
    form = ((b"Content-Type", b"application/x-www-form-urlencoded"),)
    corpus["form-encoded put"] = _raw(b"POST", b"/v0/kv", body, form)
    corpus["multipart put"] = _raw(b"POST", b"/v0/kv", body, ((b"Content-Type", b"multipart/form-data; boundary=x"),))
    corpus["cookie"] = _raw(b"GET", b"/v0/status", headers=((b"Cookie", b"a=b; c"),))
    corpus["body over the limit"] = _raw(b"POST", b"/v0/kv", b" " * 2000, ctype)
    corpus["status with a body over the limit"] = _raw(b"GET", b"/v0/status", b" " * 2000)
    corpus["head with a body over the limit"] = _raw(b"HEAD", b"/v0/status", b" " * 2000)
    corpus["header name with a space"] = _raw(b"GET", b"/v0/status", headers=((b"Bad Name", b"x"),))
    corpus["header without colon"] = b"GET /v0/status HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n"
    corpus["two content-lengths"] = b"POST /v0/kv HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    corpus["content-length not a number"] = b"POST /v0/kv HTTP/1.1\r\nContent-Length: ten\r\n\r\n{}"
    corpus["chunk size not hex"] = b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    corpus["unknown transfer-encoding"] = b"POST /v0/kv HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n{}"
    corpus["HTTP/9.9"] = b"GET /v0/status HTTP/9.9\r\n\r\n"
    corpus["no version"] = b"GET /v0/status\r\n\r\n"
    corpus["raw byte in the path"] = b"GET /v0/kv/key/\xff HTTP/1.1\r\n\r\n"
    corpus["binary garbage"] = b"\x00\x01\x02\xff\xfe\r\n\r\n"
    corpus["garbage after a request"] = _raw(b"GET", b"/v0/status", close=False) + b"\x16\x03\x01\x02\x00\r\n\r\n"
    corpus["too many headers"] = _raw(b"GET", b"/v0/status", headers=((b"X", b"a"),) * 501)
    corpus["long request line"] = _raw(b"GET", b"/" + b"a" * 20_000)
    corpus["long header"] = _raw(b"GET", b"/v0/status", headers=((b"X", b"a" * 20_000),))
    corpus["long headers"] = _raw(b"GET", b"/v0/status", headers=((b"X", b"a" * 9000),) * 2)
    return corpus


AGREEMENT_CORPUS = _agreement_corpus()


async def _exchange_raw(port: int, data: bytes) -> bytes:
    """Send data on a fresh connection; all that comes back until the server
    closes it."""
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    class Collect(protocol.Protocol):
        def __init__(self) -> None:
            self.chunks: list[bytes] = []
            self.done: defer.Deferred[bytes] = defer.Deferred()

        def connectionMade(self) -> None:  # noqa: N802
            self.transport.write(data)

        def dataReceived(self, chunk: bytes) -> None:  # noqa: N802
            self.chunks.append(chunk)

        def connectionLost(self, reason: object = None) -> None:  # noqa: N802
            self.done.callback(b"".join(self.chunks))

    client = Collect()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return await client.done.addTimeout(10, reactor)


def _without_date_and_server(data: bytes) -> bytes:
    return re.sub(rb"\r\n(?:Date|Server): [^\r\n]*", b"", data)


@pytest_twisted.async_yield_fixture
async def both_stacks(tmp_path) -> AsyncIterator[tuple[Stack, int, int]]:
    """One node behind both stacks: (stack, front door port, Klein site port)."""
    from twisted.internet import reactor

    s, stoppers = await start_stack(tmp_path, limits=Limits(max_key_bytes=64, max_body_bytes=1024))
    klein = reactor.listenTCP(0, rest_factory(s.node, "klein"), interface="127.0.0.1")
    try:
        yield s, int(s.rest_url.rsplit(":", 1)[1]), klein.getHost().port
    finally:
        await defer.maybeDeferred(klein.stopListening)
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_both_stacks_answer_byte_for_byte_alike(both_stacks: tuple[Stack, int, int]) -> None:
    """Each request of the corpus goes to the Klein site, then the same bytes
    to the front door, on the same node (writes are repeated with the same
    value, so the state both see is the same): the answers are the same
    bytes, Date and Server apart, and so is whether the connection closed.
    Before each request the store is made to hold every applied write, so
    /v0/status's stored_index is the same for both (``held_apply``)."""
    stack, front_door_port, klein_port = both_stacks
    differ = {}
    for case, data in AGREEMENT_CORPUS.items():
        await stack.node.replication.stored()
        klein = _without_date_and_server(await _exchange_raw(klein_port, data))
        await stack.node.replication.stored()
        front = _without_date_and_server(await _exchange_raw(front_door_port, data))
        assert klein, case
        if klein != front:
            differ[case] = (klein, front)
    assert not differ, "\n\n".join(f"{case}:\n klein: {k!r}\n front: {f!r}" for case, (k, f) in differ.items())


# -- streaming answers (tests.stream_route) over TCP -------------------------------------


@pytest_twisted.async_yield_fixture
async def streaming(stack: Stack, rest: str) -> AsyncIterator[tuple[Streams, int]]:
    """The stack's node behind REST stack rest again, with the test's
    streaming routes: (their producers, the port)."""
    from twisted.internet import reactor

    streams = Streams(reactor)
    port = reactor.listenTCP(0, rest_factory(stack.node, rest, streams.routes()), interface="127.0.0.1")
    try:
        yield streams, port.getHost().port
    finally:
        await defer.maybeDeferred(port.stopListening)


class RawClient:
    """A client on a raw TCP connection: what it received, and a Deferred
    that fires with all of it when the connection closes."""

    def __init__(self) -> None:
        from twisted.internet.protocol import Protocol

        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()
        client = self

        class Raw(Protocol):
            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                client.received += data

            def connectionLost(self, reason: object = None) -> None:  # noqa: N802
                client.closed.callback(client.received)

        self.protocol = Raw()

    @classmethod
    async def connect(cls, port: int, data: bytes) -> RawClient:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        client = cls()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client.protocol)
        client.protocol.transport.write(data)
        return client


@pytest_twisted.ensureDeferred
async def test_stream_arrives_as_it_is_written(streaming: tuple[Streams, int]) -> None:
    """A real HTTP client (treq) reads each chunk as the producer writes it."""
    import treq

    streams, port = streaming
    started = streams.next_start()
    url = f"http://127.0.0.1:{port}{STREAM_PATH.decode()}?mode=manual"
    resp = await treq.get(url, unbuffered=True, persistent=False)
    assert resp.code == 200
    assert resp.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert resp.headers.getRawHeaders(b"cache-control") == [b"no-cache"]
    sink = await started
    received: list[bytes] = []
    done = treq.collect(resp, received.append)
    for i in range(3):
        event = b"data: %d\n\n" % i
        sink.write(event)
        await wait_for(lambda event=event: b"".join(received).endswith(event), what=f"chunk {i}")
    sink.finish()
    await done
    assert b"".join(received) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert streams.stops == 0


@pytest_twisted.ensureDeferred
async def test_stream_and_requests_pipelined_around_it(streaming: tuple[Streams, int]) -> None:
    streams, port = streaming
    data = _raw(b"GET", b"/v0/status", close=False)
    data += _raw(b"GET", STREAM_PATH + b"?n=3&every=0.01", close=False)
    data += _raw(b"GET", b"/v0/kv/key/" + urlsafe(b"absent").encode())
    received = await _exchange_raw(port, data)
    first, rest = received.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200 OK")
    length = int(re.search(rb"Content-Length: (\d+)", first).group(1))  # type: ignore[union-attr]
    head, body = rest[length:].split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: text/event-stream" in head
    chunks, after = dechunk(body)
    assert chunks == [b"event 0\n", b"event 1\n", b"event 2\n"]
    assert after.startswith(b"HTTP/1.1 404 Not Found") and after.endswith(b'"key not found","code":5}')
    assert streams.stops == 0


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
@pytest_twisted.ensureDeferred
async def test_stream_stops_when_the_client_closes(streaming: tuple[Streams, int], version: bytes) -> None:
    streams, port = streaming
    started = streams.next_start()
    client = await RawClient.connect(port, _raw(b"GET", STREAM_PATH + b"?mode=manual", version=version, close=False))
    sink = await started
    sink.write(b"one")
    await wait_for(lambda: client.received.endswith(b"one" if version == b"HTTP/1.0" else b"3\r\none\r\n"))
    assert streams.stops == 0
    client.protocol.transport.loseConnection()
    await client.closed
    await wait_for(lambda: streams.stops == 1, what="the producer stopped")
    assert not sink.writable
    sink.write(b"dropped")
    sink.finish()
    assert streams.stops == 1


@pytest_twisted.ensureDeferred
async def test_stream_to_a_client_that_stops_reading_waits_for_it(streaming: tuple[Streams, int]) -> None:
    """The sink stops being writable once the socket's buffers are full, and
    the stream goes on when the client reads again: every byte arrives."""
    streams, port = streaming
    n, size = 400, 64 * 1024
    client = await RawClient.connect(port, b"")
    client.protocol.transport.pauseProducing()  # reads nothing
    client.protocol.transport.write(_raw(b"GET", STREAM_PATH + b"?mode=flood&n=%d&size=%d" % (n, size)))
    await wait_for(lambda: streams.waits >= 1, what="the sink to stop being writable")
    [sink] = streams.sinks
    assert not sink.writable
    client.protocol.transport.resumeProducing()
    received = await client.closed
    chunks, after = dechunk(received.split(b"\r\n\r\n", 1)[1])
    assert after == b""
    assert b"".join(chunks) == b"".join(bytes([97 + i % 26]) * size for i in range(n))
    assert streams.stops == 0
