"""dkv.client's transport against stub HTTP servers: which endpoint is tried
when, which failures are retried, the idempotency key a write carries on
every retry, and the typed errors a caller gets."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import pytest_twisted

from dkv.client import Client, Compacted, DkvClientError, NoLeader, NotFound, OutcomeUnknown, Unreachable
from dkv.client.errors import from_answer
from dkv.client.transport import IDEMPOTENCY_HEADER, decode_body, split_endpoints
from dkv.testing.launcher import free_ports
from tests.http_stub import serving

#: One answer of a stub: (HTTP status, JSON body), or "hang" (never answer).
Answer = tuple[int, Any] | str


class Stub:
    """A stub gateway that answers from a script and records each request
    (path, body, idempotency key)."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, Any, str | None]] = []
        self.release = threading.Event()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.seen.append((self.path, body, self.headers.get(IDEMPOTENCY_HEADER)))
                answer = stub.answers.pop(0) if len(stub.answers) > 1 else stub.answers[0]
                if answer == "hang":
                    stub.release.wait(10)
                    return
                status, payload = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.handler = Handler


@pytest.fixture
def stubs() -> Iterator[Callable[..., tuple[Stub, str]]]:
    with ExitStack() as stack:

        def start(*answers: Answer) -> tuple[Stub, str]:
            stub = Stub(list(answers))
            stack.callback(stub.release.set)
            return stub, stack.enter_context(serving(stub.handler))

        yield start


OK_PUT = (200, {"header": {"revision": "7"}})
NO_LEADER = (503, {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14})
UNKNOWN = (504, {"error": "outcome unknown", "code": 4})


def client(*endpoints: str, **options: Any) -> Client:
    from twisted.internet import reactor

    return Client(list(endpoints), reactor=reactor, **options)


@pytest_twisted.ensureDeferred
async def test_a_refused_endpoint_is_skipped_for_the_next(stubs) -> None:
    stub, address = stubs(OK_PUT)
    down = f"127.0.0.1:{free_ports(1)[0]}"
    c = client(down, address)
    result = await c.put(b"k", b"v")
    assert result.header.revision == 7
    assert stub.seen == [("/v3/kv/put", {"key": "aw==", "value": "dg=="}, stub.seen[0][2])]
    assert c.transport.current == 1  # the endpoint that answered is tried first next time
    await c.close()


@pytest_twisted.ensureDeferred
async def test_no_leader_moves_on_and_a_write_keeps_its_idempotency_key(stubs) -> None:
    leaderless, a = stubs(NO_LEADER)
    unknown, b = stubs(UNKNOWN)
    fine, c_address = stubs(OK_PUT)
    c = client(a, b, c_address)
    await c.put(b"k", b"v")
    keys = [seen[2] for stub in (leaderless, unknown, fine) for seen in stub.seen]
    assert len(keys) == 3 and keys[0] is not None and len(set(keys)) == 1
    await c.put(b"k", b"w")  # a new write: a new key
    assert fine.seen[-1][2] not in (None, keys[0])
    await c.close()


@pytest_twisted.ensureDeferred
async def test_reads_carry_no_idempotency_key_and_are_retried_after_504(stubs) -> None:
    unknown, a = stubs(UNKNOWN)
    fine, b = stubs((200, {"header": {"revision": "3"}, "kvs": [{"key": "aw==", "value": "dg=="}], "count": "1"}))
    c = client(a, b)
    kv = await c.get(b"k")
    assert kv is not None and (kv.key, kv.value, kv.version, kv.create_revision) == (b"k", b"v", 0, 0)
    assert unknown.seen[0][2] is None and fine.seen[0][2] is None
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_timed_out_write_is_retried_elsewhere_with_the_same_key(stubs) -> None:
    hung, a = stubs("hang")
    fine, b = stubs(OK_PUT)
    c = client(a, b, attempt_timeout=0.3)
    await c.put(b"k", b"v")
    assert hung.seen[0][2] == fine.seen[0][2] is not None
    await c.close()


@pytest_twisted.ensureDeferred
async def test_without_write_retries_a_timeout_is_outcome_unknown(stubs) -> None:
    hung, a = stubs("hang")
    fine, b = stubs(OK_PUT)
    c = client(a, b, attempt_timeout=0.3, retry_writes=False)
    with pytest.raises(OutcomeUnknown):
        await c.put(b"k", b"v")
    assert fine.seen == []
    unknown, d = stubs(UNKNOWN)
    with pytest.raises(OutcomeUnknown):
        await client(d, b, retry_writes=False).delete(b"k")
    assert fine.seen == []
    await c.close()


@pytest_twisted.ensureDeferred
async def test_the_deadline_ends_retries_with_the_last_reason(stubs) -> None:
    leaderless, a = stubs(NO_LEADER)
    with pytest.raises(NoLeader):
        await client(a, timeout=0.5).get(b"k")
    assert len(leaderless.seen) >= 2  # retried until the deadline
    unknown, b = stubs(UNKNOWN)
    with pytest.raises(OutcomeUnknown):
        await client(b, timeout=0.5).put(b"k", b"v")
    down = [f"127.0.0.1:{port}" for port in free_ports(2)]
    with pytest.raises(Unreachable, match="cannot reach"):
        await client(*down, timeout=0.5).get(b"k")
    # A write refused with "no leader" after an attempt whose outcome is unknown stays unknown.
    mixed, m = stubs(UNKNOWN, NO_LEADER)
    with pytest.raises(OutcomeUnknown):
        await client(m, timeout=0.5).put(b"k", b"v")


@pytest_twisted.ensureDeferred
async def test_refusals_are_final_and_typed(stubs) -> None:
    compacted = (400, {"error": "etcdserver: mvcc: required revision has been compacted", "code": 11})
    stub, a = stubs(compacted)
    other, b = stubs(OK_PUT)
    with pytest.raises(Compacted) as e:
        await client(a, b).range(b"k", revision=1)
    assert (e.value.code, e.value.status) == (11, 400) and other.seen == []
    stub, a = stubs((404, {"error": "etcdserver: requested lease not found", "code": 5}))
    with pytest.raises(NotFound, match="requested lease not found"):
        await client(a).revoke(123)
    assert stub.seen[0][:2] == ("/v3/lease/revoke", {"ID": "123"})
    stub, a = stubs((400, {"error": "etcdserver: key is not provided", "code": 3}))
    with pytest.raises(DkvClientError, match="key is not provided") as e:
        await client(a).put(b"", b"v")
    assert type(e.value) is DkvClientError and e.value.code == 3


def test_errors_from_answers_and_bodies() -> None:
    assert isinstance(from_answer(503, {"error": "x"}), NoLeader)
    assert isinstance(from_answer(404, "404 page not found\n"), NotFound)
    assert str(from_answer(404, "404 page not found\n")) == "404 page not found"
    assert str(from_answer(500, None)) == "HTTP 500"
    assert decode_body(b'{"result":{"TTL":"5"}}\n{"result":{"TTL":"4"}}\n') == {"result": {"TTL": "5"}}
    assert decode_body(b"") == {}
    assert split_endpoints("a:1, http://b:2/ ,") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError):
        split_endpoints(" , ")
