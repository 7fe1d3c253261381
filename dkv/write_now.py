# test-case-name: tests.test_write_now
"""``write_now``: hand bytes to a TCP transport and send them in this turn.

Twisted's ``transport.write`` only buffers: it registers the socket for
writing and sends on a later event-loop turn, once the selector says the
socket is writable (then unregisters it). For a Raft round, made of small
messages each way, that is one more turn per message, and two ``epoll_ctl``
calls. When nothing is buffered on the transport, ``write_now`` sends
straight to the socket (what the next turn would have done) and hands
Twisted only what the socket did not take, so ordering, flow control
(producers) and the handling of a broken connection stay Twisted's: an
error from the socket is left for Twisted's own write to meet.

Anything other than a plain TCP connection (TLS, a test transport) gets
``transport.write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection

__all__ = ["write_now"]


def write_now(transport: Any, data: bytes) -> None:
    """Write data to transport, sending at once what the socket takes."""
    if not isinstance(transport, Connection) or transport.TLS:
        transport.write(data)
        return
    if (
        data
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # would block, or broken: Twisted's write finds out
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)
