"""``write_now``: on a plain TCP connection with nothing buffered the bytes
leave in this turn (the transport buffers nothing); otherwise, and on any
other transport, they go through ``transport.write`` in order."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.testing import StringTransport

from dkv.write_now import write_now


def test_other_transports_get_write() -> None:
    t = StringTransport()
    write_now(t, b"abc")
    write_now(t, b"def")
    assert t.value() == b"abcdef"


class _Collect(protocol.Protocol):
    def __init__(self, want: int, done: defer.Deferred[bytes]) -> None:
        self.want, self.done, self.got = want, done, b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.got += data
        if len(self.got) >= self.want and not self.done.called:
            self.done.callback(self.got)


@pytest_twisted.ensureDeferred
async def test_tcp_sends_at_once_and_keeps_order_when_buffered() -> None:
    from twisted.internet import endpoints, reactor

    big = b"x" * (8 << 20)  # more than the socket takes at once: the rest is buffered
    payload = b"first" + big + b"last"
    done: defer.Deferred[bytes] = defer.Deferred()
    factory = protocol.Factory.forProtocol(lambda: _Collect(len(payload), done))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        client = await endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), protocol.Protocol()
        )
        transport = client.transport
        write_now(transport, b"first")
        assert not transport.dataBuffer and not transport._tempDataBuffer  # sent, not buffered
        write_now(transport, big)
        write_now(transport, b"last")  # behind what is buffered
        assert await done == payload
        transport.loseConnection()
    finally:
        await port.stopListening()
