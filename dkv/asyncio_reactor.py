# test-case-name: tests.test_config,tests.test_process,tests.test_asyncio_reactor
"""dkv runs on Twisted's asyncio reactor: gRPC's asyncio API and Twisted share
one event loop. The reactor must be installed before anything imports
``twisted.internet.reactor`` (Klein does, when it is imported).

**Its clock is monotonic.** Twisted's ``AsyncioSelectorReactor`` keeps
``ReactorBase.seconds``, which is ``time.time()``: the wall clock. Every
``callLater`` is due at a wall-clock time, so a wall clock stepped forward
fires every pending timer at once (a lease held by this leader would be
revoked early) and one stepped back stalls them all. dkv's timers, leases,
idempotency windows, token lifetimes and leader stamps all read the reactor's
``seconds()``, so ``install``/``require`` make it the event loop's
``time()`` (``time.monotonic()``), which no wall-clock step moves. Only
display (log lines, HTTP ``Date``) reads the wall clock.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import asyncioreactor


class WrongReactor(Exception):
    """Another reactor is installed; the message says how to fix it."""


def install() -> None:
    """Install the asyncio reactor unless a reactor is installed already (a
    new loop, also set as asyncio's current loop), with a monotonic clock."""
    if "twisted.internet.reactor" not in sys.modules:
        asyncioreactor.install()
        from twisted.internet import reactor

        assert isinstance(reactor, asyncioreactor.AsyncioSelectorReactor)
        use_monotonic_clock(reactor)


def is_monotonic(reactor: Any) -> bool:
    """Whether reactor's ``seconds`` is its event loop's monotonic clock."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop is not None and getattr(reactor, "seconds", None) == loop.time


def use_monotonic_clock(reactor: asyncioreactor.AsyncioSelectorReactor) -> None:
    """Make reactor's ``seconds()`` (and so every ``callLater``) run on its
    event loop's monotonic clock. Refused (``WrongReactor``) once timers are
    pending: they are due at wall-clock times."""
    if is_monotonic(reactor):
        return
    if reactor.getDelayedCalls():
        raise WrongReactor(
            "the asyncio reactor already has timers on the wall clock; dkv cannot move it to the monotonic "
            "clock: run twistd without -r"
        )
    reactor.seconds = reactor._asyncioEventloop.time


def require() -> None:
    """Install the asyncio reactor if none is, and refuse any other; its
    clock made monotonic (``use_monotonic_clock``)."""
    install()
    from twisted.internet import reactor  # installed above, or by the caller

    if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
        raise WrongReactor(
            f"dkv needs Twisted's asyncio reactor, but {type(reactor).__name__} is installed: "
            "run twistd without -r, or with -r asyncio"
        )
    use_monotonic_clock(reactor)
