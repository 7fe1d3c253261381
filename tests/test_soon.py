"""``dkv.soon``: a callable runs on the reactor's next turn, in order, once;
cancelled, never; what it raises is logged and stops nothing. On the
asyncio reactor (the node's) and on a ``task.Clock`` (the tests')."""

from __future__ import annotations

import asyncio
import threading

import pytest_twisted
from twisted.internet import defer, task

from dkv.soon import from_thread_caller, soon_caller


def test_clock_runs_soon_calls_on_its_next_turn_and_cancels() -> None:
    clock = task.Clock()
    soon = soon_caller(clock)
    ran: list[str] = []
    soon(lambda: ran.append("a"))
    soon(lambda: ran.append("b")).cancel()
    assert ran == []
    clock.advance(0)
    assert ran == ["a"]


@pytest_twisted.ensureDeferred
async def test_asyncio_reactor_runs_soon_calls_in_order_on_a_later_turn() -> None:
    from twisted.internet import reactor

    soon = soon_caller(reactor)
    ran: list[str] = []
    done: defer.Deferred[None] = defer.Deferred()
    soon(lambda: ran.append("first"))
    soon(lambda: 1 / 0)  # logged; the calls after it still run
    cancelled = soon(lambda: ran.append("cancelled"))
    # The event loop's own queue, not a DelayedCall on Twisted's heap: the
    # reactor's clock is the loop's (``dkv.asyncio_reactor``).
    assert isinstance(cancelled, asyncio.Handle)
    cancelled.cancel()
    soon(lambda: done.callback(None))
    assert ran == []  # not within this turn
    await done
    assert ran == ["first"]


@pytest_twisted.ensureDeferred
async def test_from_thread_caller_runs_on_the_reactor_thread() -> None:
    from twisted.internet import reactor

    post = from_thread_caller(reactor)
    done: defer.Deferred[threading.Thread] = defer.Deferred()
    worker = threading.Thread(target=lambda: post(lambda: done.callback(threading.current_thread())))
    worker.start()
    ran_on = await done
    worker.join()
    assert ran_on is threading.main_thread()
