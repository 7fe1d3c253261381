# test-case-name: tests.client.test_client_watch
"""A queue of items handed to whoever waits, ending with an error: what a
watch or an election observer feeds and its reader drains."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from twisted.internet import defer

T = TypeVar("T")


class ItemQueue(Generic[T]):
    """Items in order; ``get()`` is a Deferred of the next one. After
    ``fail(error)`` the items already queued are still handed out, then
    every ``get()`` fails with that error."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiting: deque[defer.Deferred[T]] = deque()
        self._error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self._error is not None

    def put(self, item: T) -> None:
        if self._error is not None:
            return
        if self._waiting:
            self._waiting.popleft().callback(item)
        else:
            self._items.append(item)

    def fail(self, error: BaseException, drop: bool = False) -> None:
        """End the queue with error (the first call wins); with drop, the
        items not handed out yet are thrown away."""
        if self._error is not None:
            return
        self._error = error
        if drop:
            self._items.clear()
        while self._waiting:
            self._waiting.popleft().errback(error)

    def get(self) -> defer.Deferred[T]:
        if self._items:
            return defer.succeed(self._items.popleft())
        if self._error is not None:
            return defer.fail(self._error)
        d: defer.Deferred[T] = defer.Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        return d

    def __len__(self) -> int:
        return len(self._items)
