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

**Its descriptors are served without the legacy log context.** Twisted's
asyncio reactor runs every read and write of a descriptor inside
``twisted.python.log.callWithLogger``: it asks the selectable for its log
prefix and pushes a copy of the legacy log context for the call. That is
some 6 µs a call here, a tenth of the leader's CPU per request when it
serves reads at 64 connections, and it only serves the ``system`` field of
messages logged through the legacy ``twisted.python.log`` API (dkv logs
through ``twisted.logger``, whose events never carry it). ``install``
makes a ``DkvReactor``, whose descriptors call the reactor's own read-or-
write step directly (it disconnects a selectable whose read or write
raised, and logs it); an error escaping that step (a ``connectionLost``
that raises) is logged here, as ``callWithLogger`` would. ``require`` takes
whichever asyncio reactor is installed (tests run on the plain one).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import asyncioreactor
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger

log = Logger()


class WrongReactor(Exception):
    """Another reactor is installed; the message says how to fix it."""


class DkvReactor(asyncioreactor.AsyncioSelectorReactor):
    """Twisted's asyncio reactor, whose descriptors' reads and writes are
    dispatched without the legacy log context (see the module docstring).
    Which descriptors are watched, and how (the event loop, or continuous
    polling for files epoll cannot watch), is Twisted's own choice."""

    def addReader(self, reader: IReadDescriptor) -> None:  # noqa: N802 - Twisted name
        super().addReader(reader)
        watched: dict[Any, int] = self._readers  # Twisted annotates its keys oddly
        fd = watched.get(reader)
        if fd is not None:  # watched by the loop: re-point its callback (no syscall)
            self._asyncioEventloop.add_reader(fd, self._dispatch, reader, True)

    def addWriter(self, writer: IWriteDescriptor) -> None:  # noqa: N802 - Twisted name
        super().addWriter(writer)
        watched: dict[Any, int] = self._writers
        fd = watched.get(writer)
        if fd is not None:
            self._asyncioEventloop.add_writer(fd, self._dispatch, writer, False)

    def _dispatch(self, selectable: Any, read: bool) -> None:
        try:
            self._readOrWrite(selectable, read)
        except Exception:  # noqa: BLE001 - as callWithLogger: logged, the loop goes on
            log.failure("unhandled error serving {selectable}", selectable=selectable)


def install() -> None:
    """Install dkv's asyncio reactor (``DkvReactor``) unless a reactor is
    installed already (a new loop, also set as asyncio's current loop),
    with a monotonic clock."""
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet.main import installReactor

        reactor = DkvReactor()
        installReactor(reactor)
        use_monotonic_clock(reactor)


def is_monotonic(reactor: Any) -> bool:
    """Whether reactor's ``seconds`` is its event loop's monotonic clock."""
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop is not None and getattr(reactor, "seconds", None) == _clock_of(loop)


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """loop's clock: ``time.monotonic`` itself when loop keeps asyncio's
    ``time()`` (which returns it: one call less each time the reactor reads
    the clock, some thirty times per request), else loop's ``time``."""
    if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


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
    reactor.seconds = _clock_of(reactor._asyncioEventloop)


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
