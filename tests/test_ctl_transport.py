"""How dkvctl reaches a cluster, against small local HTTP servers: the next
endpoint only when connecting fails, never once a request may have been
sent; the node's refusals and the unreachable as one line and an exit
status."""

from __future__ import annotations

import http.server
import json
import socket
from collections.abc import Iterator

import pytest

from dkv.ctl_transport import CtlError, request, split_endpoints
from dkv.testing.launcher import free_ports
from tests.http_stub import serving


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 with the request it saw, or what ``answers`` says for the path."""

    protocol_version = "HTTP/1.1"
    answers: dict[str, tuple[int, bytes]] = {}
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(self.path)
        echo = json.dumps({"path": self.path, "body": body.decode()}).encode()
        status, data = self.answers.get(self.path, (200, echo))
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.answers, _Recorder.seen = {}, []
    with serving(_Recorder) as address:
        yield address


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def nobody() -> str:
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_split_endpoints() -> None:
    assert split_endpoints("a:1, b:2,,http://c:3") == ["a:1", "b:2", "http://c:3"]
    with pytest.raises(CtlError, match="no endpoint given"):
        split_endpoints(" , ")


def test_the_next_endpoint_is_tried_when_one_cannot_be_reached(server: str) -> None:
    answer = request([nobody(), nobody(), "http://" + server], "POST", "/v3/kv/range", {"key": "YQ=="})
    assert answer == {"path": "/v3/kv/range", "body": '{"key": "YQ=="}'}


def test_no_endpoint_reached_is_exit_2_naming_them_all() -> None:
    first, second = nobody(), nobody()
    with pytest.raises(CtlError) as err:
        request([first, second], "GET", "/v0/status")
    assert str(err.value) == f"cannot reach {first}, {second}: [Errno 111] Connection refused"
    assert err.value.exit_code == 2


def test_once_connected_a_failure_is_not_retried_elsewhere(silent: str, server: str) -> None:
    """The request may have been applied: sending it to another node could
    apply it twice."""
    with pytest.raises(CtlError, match=f"^cannot reach {silent}: timed out") as err:
        request([silent, server], "POST", "/v3/kv/txn", {}, timeout=0.5)
    assert err.value.exit_code == 2
    assert _Recorder.seen == []


def test_refusals_are_exit_1_with_the_nodes_error(server: str) -> None:
    _Recorder.answers = {
        "/v3/kv/range": (400, b'{"error":"etcdserver: key is not provided","message":"x","code":3}'),
        "/nowhere": (404, b"Not Found\n"),
        "/bad": (200, b"<html>"),
    }
    with pytest.raises(CtlError) as err:
        request([server], "POST", "/v3/kv/range", {})
    assert (str(err.value), err.value.exit_code) == ("etcdserver: key is not provided (HTTP 400, code 3)", 1)
    with pytest.raises(CtlError) as err:
        request([server], "POST", "/nowhere", {})
    assert (str(err.value), err.value.exit_code) == ("HTTP 404 Not Found", 1)
    with pytest.raises(CtlError, match="did not answer JSON"):
        request([server], "POST", "/bad", {})


def test_bad_endpoints_are_named() -> None:
    with pytest.raises(CtlError, match="bad endpoint 'ftp://x:1'"):
        request(["ftp://x:1"], "GET", "/")
    with pytest.raises(CtlError, match="the port is not a number"):
        request(["127.0.0.1:port"], "GET", "/")
