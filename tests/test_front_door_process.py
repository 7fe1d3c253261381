"""The front door of a real ``dkv`` process, over raw sockets: pipelining,
bounds on what one client can make the node buffer, timeouts, and the
connection limit.

- 10,000 pipelined GET/POST/DELETE on one connection are all answered, in
  order;
- a client that pipelines GETs of a large value and reads none of the
  answers makes the node stop answering it, not buffer the answers;
- a client streaming an endless body gets its 413 (or endless headers their
  431) and the node's RSS stays within 50 MiB of where it started;
- a client sending one byte at a time gets a 408 at the read timeout;
- 1,000 connections that send nothing are closed by the idle timeout while
  other clients are served;
- connections beyond --max-connections are refused, logged once per burst.

Every node is killed at the end of its test, whatever happens; waits poll
with a deadline.
"""

from __future__ import annotations

import base64
import json
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dkv.testing.cluster import NodeProcess, free_node_ports, wait_until
from tests.hostile import Reply, parse_replies, read_until_closed

pytestmark = pytest.mark.process

#: The node's RSS may grow by at most this much while a hostile client runs.
RSS_SLACK = 50 * 1024 * 1024


# -- nodes ---------------------------------------------------------------------------


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """start_node(*flags): a leading one-node dkv with these extra flags.
    Every node started is killed when the test ends."""
    started: list[NodeProcess] = []

    def start(*flags: str) -> NodeProcess:
        directory = tmp_path / f"node{len(started)}"
        directory.mkdir()
        [(rpc, rest)] = free_node_ports(1)
        argv = [
            sys.executable, "-m", "dkv.cli",
            "--node-id", "a",
            "--cluster", f"a@127.0.0.1:{rpc}",
            "--rpc-port", str(rpc),
            "--rest-port", str(rest),
            "--db-path", str(directory / "a.db"),
            "--tick-ms", "20",
            "--log-level", "info",
            *flags,
        ]  # fmt: skip
        node = NodeProcess(argv, directory / "node.log", cwd=directory, rest_port=rest, name="front-door")
        started.append(node)
        node.start()
        try:
            node.wait_ready(30)
            wait_until(lambda: (st := node.try_status()) and st["role"] == "leader", 15, "the node to lead")
        except Exception:
            sys.stderr.write(f"----- log of the node -----\n{node.log_tail(80)}\n")
            raise
        return node

    try:
        yield start
    finally:
        for node in started:
            node.close()


def rss(node: NodeProcess) -> int:
    """The node's resident set size in bytes."""
    with open(f"/proc/{node.pid}/status") as f:
        kb = next(line for line in f if line.startswith("VmRSS:")).split()[1]
    return int(kb) * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def connect(node: NodeProcess, timeout: float = 15.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.rest_port or 0), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def assert_healthy(node: NodeProcess) -> None:
    assert node.alive, f"the node died:\n{node.log_tail()}"
    assert node.request("POST", "/v0/kv", {"key": b64(b"health"), "value": b64(b"ok")}) == (200, {})
    assert node.request("GET", "/v0/kv/key/" + b64(b"health")) == (200, {"key": b64(b"health"), "value": b64(b"ok")})
    assert not re.search(r"Traceback|Unhandled|#critical\]|#error\]", node.log_text()), node.log_tail(80)


# -- pipelining ---------------------------------------------------------------------------


def pipeline(n: int) -> tuple[bytes, list[tuple[int, Any]]]:
    """n keep-alive requests cycling through POST, GET (linearizable and
    serializable) and DELETE on a few keys, and the answers they must get."""
    requests, expected = [], []
    model: dict[bytes, bytes] = {}
    for i in range(n):
        key = b"pipe-%d" % (i % 11)
        path = b"/v0/kv/key/" + base64.urlsafe_b64encode(key)
        if i % 3 == 0:
            value = b"value %d" % i
            body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
            requests.append(b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            model[key] = value
            expected.append((200, {}))
        elif i % 3 == 1:
            query = b"?consistency=serializable" if i % 2 else b""
            requests.append(b"GET %s%s HTTP/1.1\r\nHost: t\r\n\r\n" % (path, query))
            if key in model:
                expected.append((200, {"key": b64(key), "value": b64(model[key])}))
            else:
                expected.append((404, {"error": "key not found", "code": 5}))
        else:
            requests.append(b"DELETE %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
            model.pop(key, None)
            expected.append((200, {}))
    return b"".join(requests), expected


def test_ten_thousand_pipelined_requests_on_one_connection(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node()
    data, expected = pipeline(10_000)
    with connect(node, timeout=120) as s:
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)  # while this thread reads
        sender.start()
        received = bytearray()
        replies: list[Reply] = []
        deadline = time.monotonic() + 300
        while len(replies) < len(expected):
            assert time.monotonic() < deadline, f"{len(replies)} answers of {len(expected)}"
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {len(replies)} answers"
            received += chunk
            end = received.rfind(b"}")  # every answer ends with its JSON body
            if end >= 0:
                try:
                    replies += parse_replies(bytes(received[: end + 1]))
                except AssertionError:
                    continue  # a "}" inside a body: wait for more
                del received[: end + 1]
        sender.join(10)
    assert [(r.status, r.json()) for r in replies] == expected
    assert_healthy(node)


# -- bounds -------------------------------------------------------------------------------


def stream_until_closed(node: NodeProcess, first: bytes, chunk: bytes, seconds: float) -> tuple[bytes, int, int]:
    """Send first, then chunk again and again, reading all the while, until
    the node closes the connection or seconds pass. (What was received, the
    bytes sent, the node's peak RSS meanwhile.)"""
    received, sent, peak = b"", 0, rss(node)
    with connect(node) as s:
        s.sendall(first)
        s.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        deadline, next_sample = time.monotonic() + seconds, 0.0
        try:
            while time.monotonic() < deadline:
                if time.monotonic() >= next_sample:
                    peak, next_sample = max(peak, rss(node)), time.monotonic() + 0.1
                for _, events in sel.select(0.1):
                    if events & selectors.EVENT_READ:
                        data = s.recv(65536)
                        if not data:
                            return received, sent, max(peak, rss(node))
                        received += data
                    if events & selectors.EVENT_WRITE:
                        sent += s.send(chunk)
        except (ConnectionResetError, BrokenPipeError):
            s.setblocking(True)
            s.settimeout(5)
            received += read_until_closed(s)
            return received, sent, max(peak, rss(node))
        finally:
            sel.close()
    raise AssertionError(f"the node kept the connection open for {seconds} s ({sent} bytes sent)")


def test_a_client_that_reads_no_answers_cannot_make_the_node_buffer_them(
    start_node: Callable[..., NodeProcess],
) -> None:
    """2,000 pipelined GETs of a 100 KiB value (270 MB of answers), and the
    client reads nothing for a while: the node stops answering (and
    reading) once its write buffer is full, serves others meanwhile, and
    its RSS stays within 50 MiB; then the client reads all 2,000, in order."""
    node = start_node()
    value = bytes(range(256)) * 400
    assert node.request("POST", "/v0/kv", {"key": b64(b"big"), "value": b64(value)}) == (200, {})
    answer = json.dumps({"key": b64(b"big"), "value": b64(value)}, separators=(",", ":")).encode()
    before = peak = rss(node)
    n = 2000
    with connect(node, timeout=60) as s:
        s.sendall(b"GET /v0/kv/key/Ymln HTTP/1.1\r\nHost: t\r\n\r\n" * n)
        for i in range(50):  # other clients, while this one reads nothing
            key = b"other-%d" % i
            assert node.request("POST", "/v0/kv", {"key": b64(key), "value": b64(b"x")}) == (200, {})
            peak = max(peak, rss(node))
        assert peak - before < RSS_SLACK, (before, peak)
        received, count = bytearray(), 0
        while count < n:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {count} answers"
            received += chunk
            while (end := received.find(b"\r\n\r\n")) >= 0:
                length = int(re.search(rb"Content-Length: (\d+)", bytes(received[:end]))[1])  # type: ignore[index]
                if len(received) < end + 4 + length:
                    break
                assert received.startswith(b"HTTP/1.1 200 OK\r\n")
                assert received[end + 4 : end + 4 + length] == answer
                del received[: end + 4 + length]
                count += 1
    assert_healthy(node)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_endless_body_gets_413_and_the_node_buffers_none_of_it(
    start_node: Callable[..., NodeProcess], framing: str
) -> None:
    node = start_node("--read-timeout", "4")
    before = rss(node)
    if framing == "content-length":
        head = b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % 10**15
        chunk = b"x" * 65536
    else:
        head = b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    received, sent, peak = stream_until_closed(node, head, chunk, seconds=30)
    replies = parse_replies(received)
    assert [(r.status, r.json()["code"]) for r in replies] == [(413, 8)], received[:500]
    assert sent > 10 * 1024 * 1024  # it read (and dropped) what came, until the read timeout
    assert peak - before < RSS_SLACK, (before, peak)
    assert_healthy(node)


@pytest.mark.parametrize(
    ("first", "chunk"),
    [(b"GET /v0/status HTTP/1.1\r\nX: ", b"a" * 4096), (b"GET /v0/status HTTP/1.1\r\n", b"X: a\r\n" * 700)],
    ids=["an endless header line", "endless header lines"],
)
def test_endless_headers_get_431_and_the_node_buffers_none_of_them(
    start_node: Callable[..., NodeProcess], first: bytes, chunk: bytes
) -> None:
    node = start_node()
    before = rss(node)
    received, sent, peak = stream_until_closed(node, first, chunk, seconds=30)
    [reply] = parse_replies(received)
    assert (reply.status, reply.json()["code"], reply.header("connection")) == (431, 8, "close")
    assert peak - before < RSS_SLACK, (before, peak)
    assert_healthy(node)


def test_a_client_sending_a_byte_at_a_time_gets_408_at_the_read_timeout(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("--read-timeout", "2")
    body = json.dumps({"key": b64(b"slow"), "value": b64(b"v" * 300)}).encode()
    request = b"POST /v0/kv HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    start = time.monotonic()
    with connect(node) as s:
        s.settimeout(0.25)  # paces the bytes: one every quarter of a second
        received = b""
        for i in range(len(request)):
            try:
                s.send(request[i : i + 1])
                received += s.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            if received.endswith(b"}"):
                break
        s.settimeout(10)
        received += read_until_closed(s)
    elapsed = time.monotonic() - start
    [reply] = parse_replies(received)
    assert (reply.status, reply.json()) == (408, {"error": "request not received within 2 s", "code": 4})
    assert 2 <= elapsed < 10
    assert node.request("GET", "/v0/kv/key/" + b64(b"slow"))[0] == 404
    assert_healthy(node)


# -- many connections -------------------------------------------------------------------------


def open_idle(node: NodeProcess, n: int, batch: int = 40) -> list[socket.socket]:
    """n connections that send nothing, opened batch at a time (each batch
    accepted before the next, within the listen backlog of 50)."""
    socks: list[socket.socket] = []
    try:
        for i in range(0, n, batch):
            for _ in range(min(batch, n - i)):
                socks.append(connect(node))
            assert node.request("GET", "/v0/status")[0] == 200
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed s (without waiting)."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_thousand_silent_connections_are_closed_by_the_idle_timeout(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("--idle-timeout", "5")
    socks = open_idle(node, 1000)
    try:
        opened = time.monotonic()
        assert sum(closed_by_server(s) for s in socks) < 100  # the last ones just opened: open still
        served = 0
        deadline = opened + 30
        while not all(closed_by_server(s) for s in socks):
            assert time.monotonic() < deadline, f"{sum(closed_by_server(s) for s in socks)} of 1000 closed"
            key = b"meanwhile-%d" % served
            assert node.request("POST", "/v0/kv", {"key": b64(key), "value": b64(b"x")}) == (200, {})
            assert node.request("GET", "/v0/kv/key/" + b64(key))[0] == 200
            served += 1
        assert served > 10  # other clients were served while the idle ones waited
    finally:
        for s in socks:
            s.close()
    assert_healthy(node)


def test_connections_beyond_the_limit_are_refused_and_logged_once(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("--max-connections", "30")
    held = open_idle(node, 29)  # the status request of open_idle needs the 30th
    held.append(connect(node))
    try:
        held[-1].sendall(b"GET /v0/status HTTP/1.1\r\nHost: t\r\n\r\n")
        held[-1].settimeout(10)
        assert held[-1].recv(65536).startswith(b"HTTP/1.1 200 ")  # 30 open, all accepted
        for _ in range(5):  # refused: closed at once, unanswered
            with connect(node) as s:
                s.settimeout(10)
                assert read_until_closed(s) == b""
        for s in held[:10]:
            s.close()
        wait_until(lambda: node.try_status() is not None, 10, "a connection to be accepted again")
    finally:
        for s in held:
            s.close()
    log = node.log_text()
    assert len(re.findall(r"refusing REST connections: 30 are open", log)) == 1, log[-3000:]
    # 5, and any poll of wait_until that came before the node saw the 10 close
    refused = re.findall(r"accepting REST connections again; refused (\d+) meanwhile", log)
    assert len(refused) == 1 and int(refused[0]) >= 5, log[-3000:]
    assert_healthy(node)
