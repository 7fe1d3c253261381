# test-case-name: tests.test_aio
"""The one bridge between Twisted's Deferreds and asyncio.

Twisted runs on the asyncio reactor, so both live on one event loop: gRPC's
asyncio API (``grpc.aio``) and the reactor's Deferreds. Code on one side
uses these two functions to wait for the other; nothing else converts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def deferred_from(awaitable: Awaitable[T]) -> Deferred[T]:
    """A Deferred that fires with the result of a coroutine or future
    (scheduled on the running loop now). Cancelling it cancels the task."""
    return Deferred.fromFuture(asyncio.ensure_future(awaitable))


async def wait(d: Deferred[T]) -> T:
    """Await a Deferred from asyncio code (a coroutine on the reactor's loop)."""
    result: Any = await d.asFuture(asyncio.get_running_loop())
    return result
