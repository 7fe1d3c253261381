"""Hostile input on the peer port (--peer-transport twisted): garbage, an
oversize length prefix, a connection that never says hello, one that goes
silent after it, a malformed hello, a peer that never reads. Each time the node logs once, drops the
connection, and goes on serving its real peers."""

from __future__ import annotations

import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import threads

from dkv.raft import messages as m
from dkv.transport.peer_frames import frame
from dkv.transport.peer_handshake import hello_frame
from tests.conftest import wait_for
from tests.peer_nets import make


def _talk(port: int, payload: bytes, wait: float = 5.0) -> bytes:
    """Send payload, then read until the node closes (b"" on a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        if payload:
            s.sendall(payload)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


CASES = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "a frame length of"),
    "oversize": (struct.pack(">I", 65 << 20) + b"B", "a frame length of 68157440 bytes"),
    "unknown_kind": (frame(b"Z", b"x"), "an unknown frame kind"),
    "no_hello": (b"", "no hello within"),
    "batch_first": (frame(b"B", b""), "not a hello"),
    "malformed_hello": (frame(b"H", b"\xff\xff\xff"), "malformed PeerHello"),
    "silent_after_hello": (hello_frame("c1", "a", "b"), "nothing heard for"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest_twisted.ensureDeferred
async def test_hostile_connection_is_dropped_and_the_node_serves_on(case: str) -> None:
    from twisted.logger import globalLogPublisher

    lines: list[str] = []

    def observe(event: dict) -> None:
        text = event.get("log_format") or ""
        if "peer port" in text:
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    b = await make("twisted", "b", "c1")
    a = await make("twisted", "a", "c1")
    try:
        payload, needle = CASES[case]
        await threads.deferToThread(_talk, b.port, payload)
        await wait_for(lambda: any(needle in line for line in lines), what=f"the log line about {needle!r}")
        await threads.deferToThread(_talk, b.port, payload)  # again: not logged twice
        assert sum(needle in line for line in lines) == 1, lines
        assert not b.transport.listener.open or all(c.sender == "a" for c in b.transport.listener.open)
        # A real peer still gets through.
        a.transport.set_peers({"b": b.address})
        hb = m.Heartbeat(frm="a", to="b", term=1, commit=0)
        await wait_for(lambda: (a.transport.send([hb]), bool(b.inbox))[1], what="a real peer's delivery")
    finally:
        globalLogPublisher.removeObserver(observe)
        await a.stop()
        await b.stop()


def _flood_pings_never_read(port: int) -> int:
    """Say hello, then send pings and never read the pongs: bytes sent
    before the node dropped the connection."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(hello_frame("c1", "a", "b"))
        pings = frame(b"P") * 40_000
        sent = 0
        try:
            while sent < 200 << 20:
                s.sendall(pings)
                sent += len(pings)
        except OSError:  # reset or broken pipe: the node dropped us
            return sent
        raise AssertionError("the node kept a connection that never reads")


@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_reads_is_dropped() -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []
    observe = lambda event: lines.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observe)
    b = await make("twisted", "b", "c1")
    a = await make("twisted", "a", "c1")
    try:
        await threads.deferToThread(_flood_pings_never_read, b.port)
        await wait_for(lambda: any("does not read" in line for line in lines), what="the log line")
        a.transport.set_peers({"b": b.address})
        hb = m.Heartbeat(frm="a", to="b", term=1, commit=0)
        await wait_for(lambda: (a.transport.send([hb]), bool(b.inbox))[1], what="a real peer's delivery")
    finally:
        globalLogPublisher.removeObserver(observe)
        await a.stop()
        await b.stop()
