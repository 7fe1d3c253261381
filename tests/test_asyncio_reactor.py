"""dkv's reactor keeps time on the event loop's monotonic clock, so a step of
the wall clock neither fires its timers early nor stalls them. Each case runs
in a fresh interpreter: installing a reactor is once per process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from dkv import asyncio_reactor


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_installed_reactor_is_monotonic_and_timers_ignore_wall_clock_steps() -> None:
    out = _run(
        """
        import time
        from dkv import asyncio_reactor
        asyncio_reactor.install()
        from twisted.internet import reactor
        assert asyncio_reactor.is_monotonic(reactor)
        assert abs(reactor.seconds() - time.monotonic()) < 1.0
        fired = []
        reactor.callLater(30, fired.append, "30s timer")
        real = time.time
        time.time = lambda: real() + 3600  # the wall clock steps forward an hour
        reactor.callLater(0.2, reactor.stop)
        reactor.run()
        print(fired)
        """
    )
    assert out == "[]"


def test_require_makes_a_plain_asyncio_reactor_monotonic() -> None:
    out = _run(
        """
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        from twisted.internet import reactor
        from dkv import asyncio_reactor
        assert not asyncio_reactor.is_monotonic(reactor)
        asyncio_reactor.require()
        print(asyncio_reactor.is_monotonic(reactor))
        """
    )
    assert out == "True"


def test_require_refuses_a_reactor_with_wall_clock_timers() -> None:
    out = _run(
        """
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        from twisted.internet import reactor
        from dkv import asyncio_reactor
        reactor.callLater(5, lambda: None)
        try:
            asyncio_reactor.require()
        except asyncio_reactor.WrongReactor as e:
            print("refused:", e)
        """
    )
    assert out.startswith("refused: ") and "run twistd without -r" in out


def test_descriptors_are_served_directly_and_an_error_is_logged_once_served_on() -> None:
    """``install`` makes a ``DkvReactor``: a connection's reads and writes
    reach the reactor's own step without the legacy log context, a
    ``connectionLost`` that raises is logged and the loop serves on, and a
    file epoll cannot watch is still polled as Twisted polls it."""
    out = _run(
        """
        import tempfile
        from dkv import asyncio_reactor
        asyncio_reactor.install()
        from twisted.internet import reactor, protocol
        from twisted.internet.abstract import FileDescriptor
        from twisted.logger import globalLogBeginner
        assert type(reactor) is asyncio_reactor.DkvReactor
        logged = []
        globalLogBeginner.beginLoggingTo([logged.append], redirectStandardIO=False)

        class Echo(protocol.Protocol):
            def dataReceived(self, data):
                key = reactor._asyncioEventloop._selector.get_key(self.transport.fileno())
                assert key.data[0]._callback == reactor._dispatch
                self.transport.write(data)
            def connectionLost(self, reason):
                if self.factory.raising:
                    self.factory.raising = False
                    raise RuntimeError("connectionLost failed")

        server = protocol.ServerFactory.forProtocol(Echo)
        server.raising = True
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        answers = []

        class Client(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"ping")
            def dataReceived(self, data):
                answers.append(data)
                self.transport.loseConnection()
            def connectionLost(self, reason):
                if len(answers) < 2:
                    reactor.callLater(0.05, connect)  # a second client after the first one's server failed
                else:
                    reactor.stop()

        def connect():
            protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port.getHost().port)

        connect()
        file = tempfile.TemporaryFile()
        polled = FileDescriptor(reactor)
        polled.fileno = file.fileno
        reactor.addReader(polled)
        assert reactor._continuousPolling.isReading(polled)
        reactor.removeReader(polled)
        reactor.callLater(10, reactor.stop)
        reactor.run()
        errors = [e for e in logged if "unhandled error serving" in e.get("log_format", "")]
        print(answers, len(errors), errors[0]["log_failure"].getErrorMessage())
        """
    )
    assert out == "[b'ping', b'ping'] 1 connectionLost failed"


def test_the_clock_is_monotonic_itself_unless_the_loop_keeps_its_own() -> None:
    """A loop with asyncio's ``time()`` (which returns ``time.monotonic()``)
    is read through ``time.monotonic`` directly; a loop with a clock of its
    own keeps it."""
    plain = asyncio.new_event_loop()

    class OwnClock(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 42.0

    own = OwnClock()
    try:
        assert asyncio_reactor._clock_of(plain) is time.monotonic
        assert asyncio_reactor._clock_of(own)() == 42.0
    finally:
        plain.close()
        own.close()
