"""dkv's reactor keeps time on the event loop's monotonic clock, so a step of
the wall clock neither fires its timers early nor stalls them. Each case runs
in a fresh interpreter: installing a reactor is once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
