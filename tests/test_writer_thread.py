"""``WriterThread``: submitted functions run one at a time, in order, off the
reactor's thread; each Deferred fires on the reactor's thread with the
result or the failure; stop finishes what was submitted."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.storage.writer_thread import WriterThread


@pytest_twisted.ensureDeferred
async def test_runs_in_order_off_the_reactor_thread_and_answers_on_it() -> None:
    from twisted.internet import reactor

    writer = WriterThread(reactor)
    writer.start()
    seen: list[tuple[int, threading.Thread]] = []
    answered_on: list[threading.Thread] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread()))
        return i * 10

    ds = [writer.submit(lambda i=i: job(i)) for i in range(50)]
    for d in ds:
        d.addCallback(lambda r: answered_on.append(threading.current_thread()) or r)
    results = await defer.gatherResults(ds)
    writer.stop()
    assert results == [i * 10 for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert {t for _, t in seen} != {threading.main_thread()} and len({t for _, t in seen}) == 1
    assert set(answered_on) == {threading.main_thread()}


@pytest_twisted.ensureDeferred
async def test_a_failure_reaches_its_deferred_and_later_work_still_runs() -> None:
    from twisted.internet import reactor

    writer = WriterThread(reactor)
    writer.start()
    failed = writer.submit(lambda: 1 / 0)
    after = writer.submit(lambda: "after")
    with pytest.raises(ZeroDivisionError):
        await failed
    assert await after == "after"
    writer.stop()


@pytest_twisted.ensureDeferred
async def test_stop_finishes_what_was_submitted_then_refuses_more() -> None:
    from twisted.internet import reactor

    writer = WriterThread(reactor)
    writer.start()
    gate = threading.Event()
    ran: list[int] = []
    first = writer.submit(lambda: gate.wait(5) and ran.append(1))
    second = writer.submit(lambda: ran.append(2))
    gate.set()
    writer.stop()  # waits for both
    assert ran == [1, 2]
    await first
    await second
    with pytest.raises(RuntimeError):
        writer.submit(lambda: None)


@pytest_twisted.ensureDeferred
async def test_idle_only_once_everything_submitted_has_been_delivered() -> None:
    from twisted.internet import reactor

    writer = WriterThread(reactor)
    writer.start()
    assert writer.idle
    gate = threading.Event()
    first = writer.submit(lambda: gate.wait(5))
    second = writer.submit(lambda: "second")
    assert not writer.idle
    gate.set()
    await first
    assert not writer.idle or second.called  # delivered together or not yet
    await second
    assert writer.idle
    failed = writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        await failed
    assert writer.idle  # a failure is delivered too
    writer.stop()
