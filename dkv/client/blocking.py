# test-case-name: tests.compat.test_client_blocking
"""A thin blocking wrapper for scripts that are not Twisted programs.

    from dkv.client.blocking import BlockingClient
    client = BlockingClient("127.0.0.1:7071,127.0.0.1:8081")
    client.put(b"k", b"v")
    print(client.get(b"k").value)
    for event in client.watch(b"k"):     # blocks for each event
        ...

The reactor (Twisted's default) runs in a daemon thread started on first
use; every call is handed to it and waited for. Not for use inside a
Twisted program (there, use ``dkv.client.Client``): a call from the
reactor's own thread would wait for itself, and raises RuntimeError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet import threads

from dkv.client.client import Client
from dkv.client.errors import WatchClosed
from dkv.client.values import Event
from dkv.client.watch import Watch

_started = threading.Lock()
_thread: threading.Thread | None = None


def reactor_in_thread() -> Any:
    """The global reactor, running in a daemon thread (started here once)."""
    global _thread
    from twisted.internet import reactor  # the default reactor, installed on first use

    with _started:
        if _thread is None:
            if reactor.running:
                raise RuntimeError("the reactor already runs: use dkv.client.Client from Twisted code")
            _thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="dkv-client-reactor", daemon=True
            )
            _thread.start()
    if threading.current_thread() is _thread:
        raise RuntimeError("BlockingClient called from the reactor's thread")
    return reactor


def _blocking(reactor: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) on the reactor's thread; its (Deferred's) result."""
    call: Any = threads.blockingCallFromThread
    return call(reactor, fn, *args, **kwargs)


class BlockingWatch:
    """A Watch read by blocking: iterate it (ends after ``close()``)."""

    def __init__(self, reactor: Any, watch: Watch) -> None:
        self._reactor = reactor
        self._watch = watch

    def ready(self) -> Any:
        return _blocking(self._reactor, self._watch.ready)

    def next(self) -> Event:
        event: Event = _blocking(self._reactor, self._watch.next)
        return event

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self.next()
            except WatchClosed:
                return

    def close(self) -> None:
        _blocking(self._reactor, self._watch.close)


class BlockingClient:
    """``Client``'s methods, each blocking until its Deferred fires (the
    result, or its exception raised). ``watch`` gives a BlockingWatch."""

    def __init__(self, endpoints: str | Sequence[str], **options: Any) -> None:
        self._reactor = reactor_in_thread()
        self.client: Client = _blocking(self._reactor, lambda: Client(endpoints, reactor=self._reactor, **options))

    def watch(self, key: bytes, range_end: bytes | None = None, **options: Any) -> BlockingWatch:
        watch = _blocking(self._reactor, lambda: self.client.watch(key, range_end, **options))
        return BlockingWatch(self._reactor, watch)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return _blocking(self._reactor, method, *args, **kwargs)

        return blocking
