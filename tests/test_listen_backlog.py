"""A burst of clients connecting at once is queued by the kernel, not
dropped (``dkv.node_tree.LISTEN_BACKLOG``).

With Twisted's default listen backlog (50), the 51st and later connections
of a burst found the accept queue full; the kernel dropped their handshakes
and their first requests waited for a SYN retransmission (1 s and more:
wrk's p99 at 1,024 connections was 1.8 s while the node answered every
request within 25 ms). Here the node is paused (SIGSTOP), so it accepts
nothing, and every one of BURST connections must still complete its
handshake; once resumed it answers each of them.
"""

from __future__ import annotations

import select
import socket
import time

from dkv.testing.poll import wait_until
from tests.test_process import one_node_process, start_leading

BURST = 300


def _connect_all(port: int, n: int, deadline: float) -> tuple[list[socket.socket], int]:
    """Start n non-blocking connects to port; return the sockets and how
    many completed their handshake before the deadline."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(pending), [], max(0.0, deadline - time.monotonic()))
        for s in writable:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                pending.discard(s)
    return socks, n - len(pending)


def test_a_burst_of_connections_to_a_paused_node_is_queued_and_answered(tmp_path, procs) -> None:
    node = one_node_process(tmp_path, procs, tmp_path / "a.db")
    start_leading(node)
    assert node.rest_port is not None
    node.pause()
    socks: list[socket.socket] = []
    try:
        socks, connected = _connect_all(node.rest_port, BURST, time.monotonic() + 3.0)
        assert connected == BURST  # Twisted's default backlog queued 51
        node.resume()
        for s in socks:
            s.setblocking(True)
            s.settimeout(10.0)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = 0
        for s in socks:
            if s.recv(4096).startswith(b"HTTP/1.1 200"):
                answered += 1
        assert answered == BURST
    finally:
        if node.paused:
            node.resume()
        for s in socks:
            s.close()
    wait_until(lambda: node.request("GET", "/health")[0] == 200, 10.0, "the node to answer after the burst")
