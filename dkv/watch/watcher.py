# test-case-name: tests.watch.test_hub
"""One watcher as the hub holds it, and the groups the hub keeps them in.

A ``Watcher`` names a span of keys (etcd's key and range_end rule,
``dkv.mvcc.keys.key_span``), its filters, whether events carry the previous
version, and ``next_revision``: the first revision it has not been given yet.
Its ``target`` (the stream that owns it) takes its events; the hub never
waits on a target.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import attrs

from dkv.mvcc.keys import Span, in_span
from dkv.pb.etcd_kv_pb2 import Event


class WatchTarget(Protocol):
    """Where a watcher's events go (a Watch stream). Never blocks."""

    def offer(self, watcher: Watcher, events: Sequence[Event], revision: int) -> bool:
        """Take events (not empty, in revision order) for watcher, with
        revision for the response header; False when the watcher's buffer is
        full, and then nothing was taken (the hub reads them again later)."""

    def has_room(self, watcher: Watcher) -> bool:
        """Whether an ``offer`` for watcher would be taken now."""

    def compacted(self, watcher: Watcher, compact_revision: int, revision: int) -> None:
        """watcher's next revision was compacted away: the hub dropped it."""


@attrs.define(eq=False)
class Watcher:
    span: Span
    target: WatchTarget
    #: The first revision not given to the target yet (for a synced watcher
    #: the hub's revision + 1 may be ahead of it: see ``WatchHub.position``).
    next_revision: int
    no_put: bool = False
    no_delete: bool = False
    prev_kv: bool = False
    #: The target's name for it (a watch id).
    tag: object = None
    #: Kept by the hub: in the synced group (given every event as applied).
    synced: bool = False

    @property
    def single_key(self) -> bytes | None:
        """The one key watched, or None for a range."""
        start, end = self.span
        return start if end == start + b"\x00" else None

    def wants(self, event: Event) -> bool:
        """Whether event is in the span and passes the filters."""
        if event.type == Event.PUT:
            if self.no_put:
                return False
        elif self.no_delete:
            return False
        return in_span(event.kv.key, self.span)

    def selection(self) -> tuple[Span, bool, bool, int]:
        """What decides which of a batch of events this watcher is given."""
        return self.span, self.no_put, self.no_delete, self.next_revision


class WatcherGroup:
    """Watchers found by key: single-key watchers by a dict lookup, range
    watchers by a scan of the ranges (etcd's watcherGroup)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, set[Watcher]] = {}
        self._ranges: set[Watcher] = set()
        self._all: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._all))

    def __contains__(self, watcher: Watcher) -> bool:
        return watcher in self._all

    def add(self, watcher: Watcher) -> None:
        self._all.add(watcher)
        key = watcher.single_key
        if key is None:
            self._ranges.add(watcher)
        else:
            self._keys.setdefault(key, set()).add(watcher)

    def discard(self, watcher: Watcher) -> None:
        if watcher not in self._all:
            return
        self._all.discard(watcher)
        key = watcher.single_key
        if key is None:
            self._ranges.discard(watcher)
            return
        same = self._keys[key]
        same.discard(watcher)
        if not same:
            del self._keys[key]

    def for_key(self, key: bytes) -> Iterator[Watcher]:
        """The watchers whose span holds key."""
        yield from self._keys.get(key, ())
        for watcher in self._ranges:
            if in_span(key, watcher.span):
                yield watcher
