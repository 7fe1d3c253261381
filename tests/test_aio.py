"""The Deferred <-> asyncio bridge (``dkv.aio``), on the test's asyncio reactor."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed

from dkv.aio import deferred_from, wait


@pytest_twisted.ensureDeferred
async def test_a_coroutine_becomes_a_deferred_and_back() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)  # give the loop a turn: really asynchronous
        return 42

    assert await deferred_from(answer()) == 42

    async def through_wait() -> str:
        return await wait(succeed("x"))

    assert await deferred_from(through_wait()) == "x"


@pytest_twisted.ensureDeferred
async def test_failures_cross_the_bridge_both_ways() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await deferred_from(boom())
    failing: Deferred[None] = Deferred()

    async def waits() -> None:
        await wait(failing)

    d = deferred_from(waits())
    failing.errback(KeyError("k"))
    with pytest.raises(KeyError):
        await d
