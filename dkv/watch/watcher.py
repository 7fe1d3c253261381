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


def _varint(value: int) -> bytes:
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: The tag of ``WatchResponse.events`` (field 11, length-delimited).
_EVENTS_TAG = b"\x5a"


def encode_events(events: Sequence[Event]) -> bytes:
    """events as the ``events`` field of a serialized WatchResponse."""
    if isinstance(events, EventBatch):
        return events.encoded()
    return b"".join(_EVENTS_TAG + _varint(len(data)) + data for data in (e.SerializeToString() for e in events))


def encode_response_head(header: bytes, watch_id: int) -> bytes:
    """The ``header`` (serialized ResponseHeader) and ``watch_id`` fields of
    a serialized WatchResponse; its events may follow (field order is free)."""
    head = b"\x0a" + _varint(len(header)) + header
    return head + b"\x10" + _varint(watch_id) if watch_id else head


class EventBatch(list[Event]):
    """Events offered to many watchers at once: their encoding is made once
    and shared by every stream that sends them."""

    _encoded: bytes | None = None

    def encoded(self) -> bytes:
        if self._encoded is None:
            self._encoded = b"".join(
                _EVENTS_TAG + _varint(len(data)) + data for data in (e.SerializeToString() for e in self)
            )
        return self._encoded


#: What decides which events a watcher wants: span, no_put, no_delete.
Selection = tuple[Span, bool, bool]


def passes(selection: Selection, event: Event) -> bool:
    """Whether event is in the selection's span and passes its filters."""
    span, no_put, no_delete = selection
    if event.type == Event.PUT:
        if no_put:
            return False
    elif no_delete:
        return False
    return in_span(event.kv.key, span)


class WatcherGroup:
    """Watchers by what they select (etcd's watcherGroup): a thousand
    watchers of one prefix are matched against an event once. Single-key
    selections are found by a dict lookup, range selections by a scan of
    the distinct ranges."""

    def __init__(self) -> None:
        self._members: dict[Selection, set[Watcher]] = {}
        self._by_key: dict[bytes, set[Selection]] = {}
        self._ranges: set[Selection] = set()
        self._all: set[Watcher] = set()

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._all))

    def __contains__(self, watcher: Watcher) -> bool:
        return watcher in self._all

    def add(self, watcher: Watcher) -> None:
        self._all.add(watcher)
        selection = watcher.selection()[:3]
        members = self._members.get(selection)
        if members is None:
            members = self._members[selection] = set()
            key = watcher.single_key
            if key is None:
                self._ranges.add(selection)
            else:
                self._by_key.setdefault(key, set()).add(selection)
        members.add(watcher)

    def discard(self, watcher: Watcher) -> None:
        if watcher not in self._all:
            return
        self._all.discard(watcher)
        selection = watcher.selection()[:3]
        members = self._members[selection]
        members.discard(watcher)
        if members:
            return
        del self._members[selection]
        key = watcher.single_key
        if key is None:
            self._ranges.discard(selection)
            return
        same = self._by_key[key]
        same.discard(selection)
        if not same:
            del self._by_key[key]

    def selections_for(self, key: bytes) -> Iterator[Selection]:
        """The selections whose span holds key."""
        yield from self._by_key.get(key, ())
        for selection in self._ranges:
            if in_span(key, selection[0]):
                yield selection

    def members(self, selection: Selection) -> list[Watcher]:
        return list(self._members.get(selection, ()))

    def for_key(self, key: bytes) -> Iterator[Watcher]:
        """The watchers whose span holds key."""
        for selection in self.selections_for(key):
            yield from self._members[selection]
