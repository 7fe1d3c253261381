"""The fault-injecting proxy of the process tests, against a plain echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from dkv.testing.proxy import ProxyHub


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub() -> Iterator[ProxyHub]:
    with ProxyHub(seed=7) as h:
        yield h


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(2)
    return s


def _echo(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_through(hub: ProxyHub, echo_port: int) -> None:
    p = hub.proxy(echo_port)
    with _connect(p.port) as s:
        assert _echo(s, b"hello") == b"hello"
        big = bytes(range(256)) * 4000
        assert _echo(s, big) == big


def test_blackhole_holds_then_releases(hub: ProxyHub, echo_port: int) -> None:
    p = hub.proxy(echo_port)
    with _connect(p.port) as s:
        assert _echo(s, b"a") == b"a"
        p.blackhole()
        s.sendall(b"held")
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(10)
        # A new connection is accepted but nothing flows.
        with _connect(p.port) as s2:
            s2.settimeout(0.3)
            s2.sendall(b"x")
            with pytest.raises(socket.timeout):
                s2.recv(10)
            p.pass_through()
            s2.settimeout(2)
            assert s2.recv(10) == b"x"
        s.settimeout(2)
        assert s.recv(10) == b"held"


def test_refuse_resets_current_and_new(hub: ProxyHub, echo_port: int) -> None:
    p = hub.proxy(echo_port)
    s = _connect(p.port)
    assert _echo(s, b"a") == b"a"
    p.refuse()
    with pytest.raises(OSError):
        # the reset arrives as an error or as an empty read
        s.sendall(b"b")
        if not s.recv(10):
            raise ConnectionResetError
    s.close()
    with pytest.raises(OSError):
        s3 = _connect(p.port)
        s3.sendall(b"c")
        if not s3.recv(10):
            raise ConnectionResetError
    p.pass_through()
    with _connect(p.port) as s4:
        assert _echo(s4, b"d") == b"d"


def test_delay_keeps_order(hub: ProxyHub, echo_port: int) -> None:
    p = hub.proxy(echo_port)
    p.delay(0.1, jitter=0.05)
    with _connect(p.port) as s:
        start = time.monotonic()
        for i in range(5):
            s.sendall(b"%d" % i)
        got = b""
        while len(got) < 5:
            got += s.recv(10)
        assert got == b"01234"
        assert time.monotonic() - start >= 0.1  # there and back, each delayed


def test_flaky_resets_some_connections(hub: ProxyHub, echo_port: int) -> None:
    p = hub.proxy(echo_port)
    p.flaky(0.5)
    failures = 0
    for _ in range(20):
        try:
            with _connect(p.port) as s:
                if _echo(s, b"ping") != b"ping":
                    failures += 1
        except OSError:
            failures += 1
    assert 0 < failures < 20


def test_target_down_resets_client(hub: ProxyHub) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    p = hub.proxy(dead_port)
    try:
        with _connect(p.port) as s:
            data = s.recv(10)
    except OSError:
        data = b""
    assert data == b""


def test_close_closes_everything(echo_port: int) -> None:
    hub = ProxyHub()
    p = hub.proxy(echo_port)
    s = _connect(p.port)
    assert _echo(s, b"a") == b"a"
    hub.close()
    try:
        data = s.recv(10)
    except OSError:
        data = b""
    assert data == b""
    s.close()
    with pytest.raises(OSError):
        _connect(p.port)
    with pytest.raises(RuntimeError):
        p.blackhole()
