# test-case-name: tests.test_writer_thread
"""``WriterThread``: one thread that runs the store's writes in order.

The store hands it a function (``submit``) and gets a Deferred that fires
on the reactor's thread with what the function returned, or fails with what
it raised. Functions run one at a time, in the order submitted, on the one
thread (LMDB allows one write transaction at a time).

It replaces Twisted's ``ThreadPool`` (``deferToThreadPool``) for this one
job because that is built for many threads and many callers: each call goes
through its team's coordinator, a context copy and a worker queue, and each
result comes back through ``reactor.callFromThread``, which on the asyncio
reactor takes two event-loop turns. Here a call is a ``SimpleQueue.put``
and results come back through ``dkv.soon.from_thread_caller``: one turn,
and results that complete while the reactor has not yet taken the earlier
ones ride along with them (one wake-up for the lot).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dkv.soon import from_thread_caller

__all__ = ["WriterThread"]

T = TypeVar("T")

_STOP = object()


class WriterThread:
    """Runs submitted functions on one thread (see the module docstring)."""

    def __init__(self, reactor: Any, name: str = "dkv-writer") -> None:
        """reactor: where results are delivered (``callFromThread``, or the
        asyncio loop's ``call_soon_threadsafe``)."""
        self._post = from_thread_caller(reactor)
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[Deferred[Any], bool, Any]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False
        self._busy = 0  # submitted, not yet delivered (reactor thread only)

    @property
    def idle(self) -> bool:
        """Everything submitted has run and its Deferred has fired: nothing
        runs on the thread now, and what the caller does next comes after
        it all. Read on the reactor's thread (where submit and delivery run)."""
        return self._busy == 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Deferred[T]:
        """Run fn on the thread after everything submitted before it; the
        Deferred fires on the reactor's thread. Refused once stopped."""
        if self._stopped:
            raise RuntimeError("the writer thread is stopped")
        d: Deferred[T] = Deferred()
        self._busy += 1
        self._queue.put((fn, d))
        return d

    def stop(self) -> None:
        """Let the thread finish what was submitted, then end; wait for it.
        Results not yet delivered are still delivered through the reactor."""
        if self._stopped:
            return
        self._stopped = True
        self._queue.put(_STOP)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        queue = self._queue
        while True:
            item = queue.get()
            if item is _STOP:
                return
            fn, d = item
            try:
                outcome: tuple[Deferred[Any], bool, Any] = (d, True, fn())
            except BaseException:  # noqa: BLE001 - handed to the Deferred
                outcome = (d, False, Failure())  # type: ignore[no-untyped-call]
            with self._lock:
                self._done.append(outcome)
                first = len(self._done) == 1
            if first:
                self._post(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for d, ok, value in done:
            self._busy -= 1  # idle only once the last has fired: later ones still wait
            if ok:
                d.callback(value)
            else:
                d.errback(value)
