# test-case-name: tests.test_soon
"""Run a callable on the reactor's next turn, cheaply.

``reactor.callLater(0, f)`` on Twisted's asyncio reactor builds a
``DelayedCall``, pushes it on Twisted's heap, cancels and re-arms the event
loop's one timer handle, and runs ``f`` from ``runUntilCurrent`` a turn
later; ``reactor.callFromThread(f)`` wakes the loop, which then does all of
that (``f`` runs two turns after the wake-up). The Raft driver and the
store's writer thread do this on every round, so on the asyncio reactor
these helpers go to the event loop directly (``call_soon``,
``call_soon_threadsafe``): ``f`` runs on the next turn, in order with the
other callbacks queued for it, and what it raises is logged (Twisted's log,
as for a ``DelayedCall``) and goes no further. Any other clock (a
``task.Clock`` in tests, another reactor) gets ``callLater(0, f)`` and
``callFromThread(f)``: the same contract, its usual way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dkv.asyncio_reactor import is_monotonic
from dkv.logs import logger

__all__ = ["Cancellable", "from_thread_caller", "soon_caller"]

log = logger("dkv.soon")


class Cancellable(Protocol):
    """A call not yet made; ``cancel()`` it before it runs, never after."""

    def cancel(self) -> Any: ...


def _loop(clock: Any) -> Any:
    """The asyncio event loop under clock if it is Twisted's asyncio reactor
    whose clock is the loop's own (``dkv.asyncio_reactor``), else None."""
    if not is_monotonic(clock):
        return None
    return clock._asyncioEventloop


def _logged(fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - logged as a DelayedCall's would be
            log.failure("unhandled error in a callback run soon")

    return run


def soon_caller(clock: Any) -> Callable[[Callable[[], object]], Cancellable]:
    """A function that schedules ``fn`` for clock's next turn and returns a
    handle that can cancel it (see the module docstring)."""
    loop = _loop(clock)
    if loop is None:
        return lambda fn: clock.callLater(0, fn)
    call_soon = loop.call_soon
    return lambda fn: call_soon(_logged(fn))


def from_thread_caller(reactor: Any) -> Callable[[Callable[[], object]], None]:
    """A function any thread may call to run ``fn`` on reactor's thread, on
    its next turn (see the module docstring)."""
    loop = _loop(reactor)
    if loop is None:
        return reactor.callFromThread
    call_soon_threadsafe = loop.call_soon_threadsafe
    return lambda fn: call_soon_threadsafe(_logged(fn))
