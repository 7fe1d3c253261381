# test-case-name: tests.mvcc.test_range,tests.watch.test_hub
"""Reads of the multi-version store: Range, the event history, HashKV.

``MvccView`` reads a consistent ``Tables`` view (the driver's read view of
the applied state); it never writes. It reads the two counters when it is
made and trusts them after: a view does not change under it (the tables
contract), and ``MvccStore``, which extends it, keeps them current itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from itertools import groupby
from typing import TYPE_CHECKING

from dkv.mvcc import errors
from dkv.mvcc.checks import check_range
from dkv.mvcc.keys import (
    Span,
    after_all_of,
    escape,
    index_key,
    index_span,
    is_empty,
    key_span,
    parse_index_key,
    parse_revision_key,
    revision_key,
)
from dkv.mvcc.layout import COMPACTED, HISTORY, INDEX, LIVE, REVISION, read_counter
from dkv.mvcc.ranges import Found, filtered, has_filters, keys_read, sort_order, sorted_by_state
from dkv.mvcc.records import KeyState, decode_state, is_tombstone
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from dkv.pb.etcd_rpc_pb2 import RangeRequest, RangeResponse

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; the store needs only the protocols
    from dkv.storage.tables import Tables


#: The fields of a RangeRequest that leave it a read of one key now.
_PLAIN = frozenset({"key", "serializable"})


class MvccView:
    """etcd's reads over a consistent view of the store's tables."""

    def __init__(self, tables: Tables, counters: tuple[int, int] | None = None) -> None:
        """counters: (revision, compact revision) as tables hold them, if the
        caller knows them (``dkv.statemachine.Carry``); read otherwise."""
        self._tables = tables
        if counters is not None:
            self._revision, self._compacted = counters
        else:
            self._revision = read_counter(tables, REVISION)
            self._compacted = read_counter(tables, COMPACTED)

    @property
    def tables(self) -> Tables:
        """The view of the tables this reads (for state kept beside the
        store's, such as ``dkv.mvcc.leases``)."""
        return self._tables

    @property
    def revision(self) -> int:
        """The revision of the last write (1 for an empty store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction; -1 if there was none."""
        return self._compacted

    def key_count(self) -> int:
        """The keys in the store now (a scan of ``mvcc.live``: O(keys))."""
        return sum(1 for _ in self._tables.scan(LIVE))

    def range(self, request: RangeRequest) -> RangeResponse:
        """etcd's Range. ``header.revision`` is the store's revision (also for
        a read at an older ``revision``); ``count`` is the number of keys in
        the range at that revision, whatever ``limit`` and the min/max
        filters; ``more`` says that the filtered, sorted keys were cut at
        ``limit``. Raises EmptyKey, FutureRevision, Compacted."""
        check_range(request)
        response = RangeResponse()
        self._range_into(response, request, self._revision)
        return response

    def value(self, key: bytes) -> bytes | None:
        """The value of key now, None if it has none: what a Range of that
        one key answers in its ``kvs``, without the Range's messages (the
        hot read of ``/v0``)."""
        record = self.record(key)
        return None if record is None else KeyValue.FromString(record).value

    def record(self, key: bytes) -> bytes | None:
        """The encoded KeyValue of key now, None if it has none: what a
        Range of that one key answers in its ``kvs`` (the hot read of
        etcd's gateway, ``dkv.api.etcd_gateway``)."""
        live = self._tables.get(LIVE, key)
        if live is None:
            return None
        state = decode_state(live)
        return self._tables.get(HISTORY, revision_key(state.mod_revision, state.sub))

    def events(
        self,
        start_revision: int,
        end_revision: int | None = None,
        limit: int | None = None,
        *,
        prev_kv: bool = False,
    ) -> list[Event]:
        """The events of revisions start_revision <= r <= end_revision (None:
        the newest), in revision order and, within a revision, in the order
        its txn made them. A PUT event carries the new KeyValue, a DELETE
        event the key with mod_revision the revision of the delete.

        ``limit`` bounds the number of events, but a revision is never split:
        the answer ends with the last revision that fits whole, or is the
        first revision alone if that has more events than the limit. The next
        call starts at the revision after the last event's
        ``kv.mod_revision``.

        ``prev_kv``: each event carries the version before it, when the key
        existed at the revision before and that revision is not compacted
        (as etcd's watch fills it). Raises Compacted when start_revision is
        below the compacted revision; a start above the newest revision
        finds nothing yet."""
        if start_revision < self._compacted:
            raise errors.Compacted()
        start = max(start_revision, 1)
        end = self._revision if end_revision is None else min(end_revision, self._revision)
        found: list[Event] = []
        if end < start:
            return found
        changes = self._tables.scan(HISTORY, revision_key(start), revision_key(end + 1))
        for main, group in groupby(changes, key=_main_revision):
            records = [data for _rkey, data in group]
            if limit is not None and found and len(found) + len(records) > limit:
                break
            for data in records:
                kv = KeyValue.FromString(data)
                event = Event(type=Event.DELETE if is_tombstone(kv) else Event.PUT, kv=kv)
                if prev_kv:
                    before = self._version_before(kv.key, main)
                    if before is not None:
                        event.prev_kv.CopyFrom(before)
                found.append(event)
            if limit is not None and len(found) >= limit:
                break
        return found

    def with_prev_kv(self, events: Iterable[Event]) -> list[Event]:
        """Copies of events (of this view's history) each carrying the
        version of its key before it, as ``events(prev_kv=True)`` fills them."""
        found = []
        for event in events:
            copy = Event()
            copy.CopyFrom(event)
            before = self._version_before(event.kv.key, event.kv.mod_revision)
            if before is not None:
                copy.prev_kv.CopyFrom(before)
            found.append(copy)
        return found

    def hash_kv(self, revision: int = 0) -> tuple[int, int]:
        """(hash, compact revision): a CRC-32 of the history up to revision
        (<= 0: the newest), equal on every member that applied the same
        writes and compactions, whatever it applied after revision.

        It covers the history table alone -- each change's table key
        (revision, sub) and record (the full KeyValue) for every change at or
        below revision that compaction kept -- in table order; not the live
        and index tables, which are derived from it. Compare two members'
        hashes only when their compact revisions are equal. Raises Compacted
        for 0 < revision <= the compacted revision (as etcd), FutureRevision
        above the newest."""
        if 0 < revision <= self._compacted:
            raise errors.Compacted()
        if revision > self._revision:
            raise errors.FutureRevision()
        if revision <= 0:
            revision = self._revision
        crc = 0
        for rkey, data in self._tables.scan(HISTORY, b"", revision_key(revision + 1)):
            crc = zlib.crc32(data, zlib.crc32(rkey, crc))
        return crc, self._compacted

    # ---- shared with MvccStore ----

    def _range_into(self, response: RangeResponse, request: RangeRequest, current: int) -> None:
        """Answer request into response as of revision current (the store's,
        or a txn's while it writes)."""
        if all(field.name in _PLAIN for field, _ in request.ListFields()):
            # One key now, with no option that changes the answer (the hot
            # read of clients): what the general path below answers, with
            # fewer of the request's fields read.
            response.header.revision = current
            live = self._tables.get(LIVE, request.key)
            if live is not None:
                response.count = 1
                state = decode_state(live)
                response.kvs.add().ParseFromString(
                    self._tables.get(HISTORY, revision_key(state.mod_revision, state.sub))
                )
            return
        revision = request.revision
        if revision > current:
            raise errors.FutureRevision()
        if revision <= 0:
            revision = current
        if revision < self._compacted:
            raise errors.Compacted()
        span = key_span(request.key, request.range_end)
        if revision != current:
            raw = self._at(span, revision)
        elif not request.range_end:
            # one key now: a lookup, not a scan (the hot read of /v0 and of clients)
            live = self._tables.get(LIVE, request.key)
            raw = [] if live is None else [(request.key, live)]
        else:
            raw = self._live_raw(span)
        response.header.revision = current
        response.count = len(raw)
        if request.count_only:
            return
        read = keys_read(request)
        if read:
            raw = raw[:read]
        order = sort_order(request)
        descending = order == RangeRequest.DESCEND
        limit = request.limit if request.limit > 0 else len(raw)
        if request.sort_target == RangeRequest.KEY and not has_filters(request):
            # key order as found: decode only what is returned
            if descending:
                raw = raw[::-1]
            response.more = len(raw) > limit
            found = [(key, decode_state(data)) for key, data in raw[:limit]]
        else:
            found = filtered([(key, decode_state(data)) for key, data in raw], request)
            if request.sort_target == RangeRequest.VALUE and order in (RangeRequest.ASCEND, RangeRequest.DESCEND):
                self._sorted_by_value_into(response, found, descending, limit, request.keys_only)
                return
            if order in (RangeRequest.ASCEND, RangeRequest.DESCEND):
                found = sorted_by_state(found, request.sort_target, descending)
            response.more = len(found) > limit
            found = found[:limit]
        for key, state in found:
            if request.keys_only:
                response.kvs.append(state.key_value(key))
            else:
                response.kvs.add().ParseFromString(
                    self._tables.get(HISTORY, revision_key(state.mod_revision, state.sub))
                )

    def _sorted_by_value_into(
        self, response: RangeResponse, found: Found, descending: bool, limit: int, keys_only: bool
    ) -> None:
        kvs = sorted((self._record(state) for _key, state in found), key=_value, reverse=descending)
        response.more = len(kvs) > limit
        response.kvs.extend(kvs[:limit])
        if keys_only:
            for kv in response.kvs:
                kv.ClearField("value")

    def _live(self, span: Span) -> Found:
        """The keys in span now, in key order."""
        return [(key, decode_state(data)) for key, data in self._live_raw(span)]

    def _live_raw(self, span: Span) -> list[tuple[bytes, bytes]]:
        """The keys in span now and their encoded KeyStates, in key order."""
        if is_empty(span):
            return []
        start, end = span
        return list(self._tables.scan(LIVE, start, end))

    def _at(self, span: Span, revision: int) -> list[tuple[bytes, bytes]]:
        """The keys in span at an older revision and their encoded KeyStates,
        in key order: for each key with history in span, its newest change at
        or below revision, if that is not a delete. Two index seeks per key."""
        found: list[tuple[bytes, bytes]] = []
        if is_empty(span):
            return found
        position, stop = index_span(span)
        while True:
            first = next(self._tables.scan(INDEX, position, stop), None)
            if first is None:
                return found
            key, oldest = parse_index_key(first[0])
            if oldest <= revision:
                newest = next(self._tables.scan(INDEX, escape(key), index_key(key, revision + 1), reverse=True))
                if not decode_state(newest[1]).tombstone:
                    found.append((key, newest[1]))
            position = after_all_of(key)

    def _record(self, state: KeyState) -> KeyValue:
        """The full KeyValue of a version, from the history."""
        return KeyValue.FromString(self._tables.get(HISTORY, revision_key(state.mod_revision, state.sub)))

    def _version_before(self, key: bytes, revision: int) -> KeyValue | None:
        """The version of key at revision - 1, if it existed then and that
        revision is not compacted."""
        if revision - 1 < self._compacted:
            return None
        entry = next(self._tables.scan(INDEX, escape(key), index_key(key, revision), reverse=True), None)
        if entry is None:
            return None
        state = decode_state(entry[1])
        return None if state.tombstone else self._record(state)


def _value(kv: KeyValue) -> bytes:
    return kv.value


def _main_revision(change: tuple[bytes, bytes]) -> int:
    return parse_revision_key(change[0])[0]


def key_count_change(events: Iterable[Event]) -> int:
    """How applying these events (of the store's writes) changed the number
    of keys: a put that created a key (version 1) adds one, a delete takes
    one away (the store emits deletes only for keys that existed)."""
    change = 0
    for event in events:
        if event.type == Event.DELETE:
            change -= 1
        elif event.kv.version == 1:
            change += 1
    return change
