# test-case-name: tests.mvcc.test_store
"""Writes of the multi-version store: Put, DeleteRange, Txn, Compact.

``MvccStore`` is a ``MvccView`` over writable tables, plus etcd's writes. It
is a deterministic state machine: what it writes depends only on the tables
and the request (no clock, no randomness, no dict or hash order), so every
replica that applies the same requests holds the same tables, and a new
``MvccStore`` over those tables (after a restart or a snapshot install)
behaves exactly like the old one. It must be the only writer of the
``mvcc.*`` tables in its view.

Every write happens at one new revision whatever number of keys it touches,
and only if it changes something: a delete that finds nothing, or a txn
whose path only reads, leaves the revision alone. A request the store
refuses (an ``errors.EtcdError``) writes nothing: every check runs before the
first write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs

from dkv.mvcc import errors
from dkv.mvcc.checks import check_delete_range, check_put, check_txn
from dkv.mvcc.compaction import compact
from dkv.mvcc.keys import index_key, key_span, revision_key
from dkv.mvcc.layout import COMPACTED, HISTORY, INDEX, LIVE, REVISION, write_counter
from dkv.mvcc.leases import Leases, NoLeases
from dkv.mvcc.records import KeyState, decode_state, encode_live, encode_state, unpack_state
from dkv.mvcc.view import MvccView
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from dkv.pb.etcd_rpc_pb2 import (
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RequestOp,
    TxnRequest,
    TxnResponse,
)

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; the store needs only the protocols
    from dkv.storage.tables import WritableTables


R = TypeVar("R")


@attrs.frozen
class Written(Generic[R]):
    """The answer to a write and the events it made (empty if it changed
    nothing), in the order it made them; all at ``response.header.revision``."""

    response: R
    events: tuple[Event, ...] = ()


class MvccStore(MvccView):
    """etcd's multi-version key-value store over ``WritableTables``.

    ``leases`` answers for lease ids and hears attaches and detaches.
    ``prev_kv_in_events``: the events of each write carry the version before
    (for watchers that asked for prev_kv; it costs a read per change).
    ``revision_at_flush``: the store's revision reaches its table when
    ``flush_revision`` is called (once per batch of writes,
    ``dkv.statemachine``), not with each write; until then only this store
    knows it (another view of the tables reads the one before)."""

    def __init__(
        self,
        tables: WritableTables,
        *,
        leases: Leases | None = None,
        prev_kv_in_events: bool = False,
        counters: tuple[int, int] | None = None,
        revision_at_flush: bool = False,
    ) -> None:
        super().__init__(tables, counters)
        self._writable = tables
        self._revision_at_flush = revision_at_flush
        self._revision_unwritten = False
        self._leases: Leases = NoLeases() if leases is None else leases
        self._prev_kv_in_events = prev_kv_in_events

    def flush_revision(self) -> None:
        """Write the store's revision to its table if a write moved it since
        the last flush (``revision_at_flush``)."""
        if self._revision_unwritten:
            self._revision_unwritten = False
            write_counter(self._writable, REVISION, self._revision)

    def put(self, request: PutRequest) -> Written[PutResponse]:
        """etcd's Put: one new revision. ``prev_kv``: the response carries the
        version before. ``ignore_value`` / ``ignore_lease`` keep the current
        value / lease (KeyNotFound if the key does not exist). Raises
        EmptyKey, ValueProvided, LeaseProvided, LeaseNotFound, KeyNotFound."""
        if (
            request.key
            and not (request.lease or request.prev_kv or request.ignore_value or request.ignore_lease)
            and not self._prev_kv_in_events
        ):
            return self._plain_put(request.key, request.value)
        return self._put(request)

    def _put(self, request: PutRequest) -> Written[PutResponse]:
        """``put``, any request: the checks, then the write as a txn's put makes it."""
        check_put(request)
        self._check_lease(request)
        self._check_existing(request)
        write = _Write(self)
        response = PutResponse()
        self._put_into(response, write, request)
        return Written(response, write.finish())

    def _plain_put(self, key: bytes, value: bytes) -> Written[PutResponse]:
        """``_put`` of a request that asks for nothing but key = value (key
        not empty; no lease, prev_kv or ignore_*) in a store without
        ``prev_kv_in_events``: the hot write of every member, made without
        the steps that do nothing for it (checks that pass, a ``_Write``, a
        ``KeyState``), with the same table writes, event and answer
        (tests/mvcc/test_plain_put.py holds the two to that)."""
        main = self._revision + 1
        live = self._tables.get(LIVE, key)
        if live is None:
            create, version, old_lease = main, 1, 0
        else:
            _, _, _, create, version, old_lease = unpack_state(live)
            version += 1
        event = Event(type=Event.PUT)
        kv = event.kv
        kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value = key, create, main, version, value
        state = encode_live(main, 0, create, version, 0)
        tables = self._writable
        tables.put(HISTORY, revision_key(main, 0), kv.SerializeToString())
        tables.put(INDEX, index_key(key, main), state)
        tables.put(LIVE, key, state)
        if old_lease:
            self._leases.detach(old_lease, key)
        self._moved_to(main)
        response = PutResponse()
        response.header.revision = main
        return Written(response, (event,))

    def _moved_to(self, revision: int) -> None:
        """A write made revision: the store's revision from now on (in its
        table now, or at the next flush with ``revision_at_flush``)."""
        self._revision = revision
        if self._revision_at_flush:
            self._revision_unwritten = True
        else:
            write_counter(self._writable, REVISION, revision)

    def delete_range(self, request: DeleteRangeRequest) -> Written[DeleteRangeResponse]:
        """etcd's DeleteRange: deletes every key in the range at one new
        revision, or leaves the revision alone if there is none. Raises
        EmptyKey."""
        check_delete_range(request)
        write = _Write(self)
        response = DeleteRangeResponse()
        self._delete_into(response, write, request)
        return Written(response, write.finish())

    def txn(self, request: TxnRequest) -> Written[TxnResponse]:
        """etcd's Txn. Every compare, nested txns' included, is evaluated
        against the store before the txn, which fixes the path; then the
        operations of the path run in order, reads seeing the writes before
        them, all writes at one new revision. Raises the check errors
        (``checks.check_txn`` without a size limit), and, for an operation on
        the path, KeyNotFound (ignore_value / ignore_lease on a key that does
        not exist before the txn), LeaseNotFound, FutureRevision and
        Compacted (a Range at a revision above the store's or below the
        compacted one) -- before writing anything."""
        check_txn(request, max_txn_ops=None)
        plan = self._plan(request)
        for op in plan.operations():
            if op.WhichOneof("request") == "request_put":
                self._check_lease(op.request_put)
                self._check_existing(op.request_put)
        for op in plan.operations():
            if op.WhichOneof("request") == "request_range":
                self._check_txn_range(op.request_range.revision)
        write = _Write(self)
        response = TxnResponse()
        self._run(response, write, plan)
        response.header.revision = write.current
        return Written(response, write.finish())

    def compact(self, revision: int) -> CompactionResponse:
        """etcd's Compact: reads below revision fail with Compacted from now
        on, and the history they needed is dropped (see
        ``dkv.mvcc.compaction``). Raises Compacted if revision is not above
        the compacted revision, FutureRevision if above the store's."""
        if revision <= self._compacted:
            raise errors.Compacted()
        if revision > self._revision:
            raise errors.FutureRevision()
        compact(self._writable, self._compacted, revision)
        self._compacted = revision
        write_counter(self._writable, COMPACTED, revision)
        response = CompactionResponse()
        response.header.revision = self._revision
        return response

    # ---- checks before any write ----

    def _check_lease(self, request: PutRequest) -> None:
        if request.lease and not self._leases.exists(request.lease):
            raise errors.LeaseNotFound()

    def _check_existing(self, request: PutRequest) -> None:
        if (request.ignore_value or request.ignore_lease) and self._state(request.key) is None:
            raise errors.KeyNotFound()

    def _check_txn_range(self, revision: int) -> None:
        """etcd's check of a Range in a txn, against the store before it: 0 is
        the newest; above the store's revision is a future one; below the
        compacted revision -- negative ones too, once something was
        compacted -- is compacted."""
        if revision == 0:
            return
        if revision > self._revision:
            raise errors.FutureRevision()
        if revision < self._compacted:
            raise errors.Compacted()

    # ---- the path of a txn ----

    def _plan(self, request: TxnRequest) -> _Plan:
        succeeded = all(self._compare(compare) for compare in request.compare)
        ops = request.success if succeeded else request.failure
        nested = tuple(self._plan(op.request_txn) for op in ops if op.WhichOneof("request") == "request_txn")
        return _Plan(succeeded, ops, nested)

    def _compare(self, compare: Compare) -> bool:
        """etcd's compare: true if every key in the range satisfies it. No key:
        a VALUE compare fails; any other compares against zero."""
        found = self._live(key_span(compare.key, compare.range_end))
        if not found:
            return compare.target != Compare.VALUE and _holds(compare, 0)
        for _key, state in found:
            if compare.target == Compare.VALUE:
                holds = _holds(compare, self._record(state).value)
            else:
                holds = _holds(compare, _TARGETS.get(compare.target, _zero)(state))
            if not holds:
                return False
        return True

    def _run(self, response: TxnResponse, write: _Write, plan: _Plan) -> None:
        response.succeeded = plan.succeeded
        nested = iter(plan.nested)
        for op in plan.ops:
            out = response.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self._range_into(out.response_range, op.request_range, write.current)
            elif kind == "request_put":
                self._put_into(out.response_put, write, op.request_put)
            elif kind == "request_delete_range":
                self._delete_into(out.response_delete_range, write, op.request_delete_range)
            else:
                out.response_txn.header.SetInParent()  # etcd: a nested txn's header is empty
                self._run(out.response_txn, write, next(nested))

    # ---- one operation within a write ----

    def _put_into(self, response: PutResponse, write: _Write, request: PutRequest) -> None:
        previous = self._state(request.key)
        before = None
        if previous is not None and (request.prev_kv or request.ignore_value or self._prev_kv_in_events):
            before = self._record(previous)
        value = before.value if request.ignore_value and before is not None else request.value
        lease = previous.lease if request.ignore_lease and previous is not None else request.lease
        if request.prev_kv and before is not None:
            response.prev_kv.CopyFrom(before)
        write.put(request.key, value, lease, previous, before)
        response.header.revision = write.current

    def _delete_into(self, response: DeleteRangeResponse, write: _Write, request: DeleteRangeRequest) -> None:
        found = self._live(key_span(request.key, request.range_end))
        for key, state in found:
            before = self._record(state) if request.prev_kv or self._prev_kv_in_events else None
            if request.prev_kv:
                response.prev_kvs.append(before)
            write.delete(key, state, before)
        response.deleted = len(found)
        response.header.revision = write.current

    def _state(self, key: bytes) -> KeyState | None:
        data = self._tables.get(LIVE, key)
        return None if data is None else decode_state(data)


@attrs.frozen
class _Plan:
    """The path a txn takes: whether its compares held, the operations that
    follow, and the plans of the nested txns among them, in order."""

    succeeded: bool
    ops: Sequence[RequestOp]
    nested: tuple[_Plan, ...]

    def operations(self) -> list[RequestOp]:
        """Every operation on the path, nested ones included, in order."""
        found: list[RequestOp] = []
        nested = iter(self.nested)
        for op in self.ops:
            if op.WhichOneof("request") == "request_txn":
                found.extend(next(nested).operations())
            else:
                found.append(op)
        return found


class _Write:
    """The changes of one write at revision ``begin + 1``: each change writes
    its history record, its index entry and the live table; ``finish``
    moves the store's revision if anything changed."""

    def __init__(self, store: MvccStore) -> None:
        self._store = store
        self._tables = store._writable
        self._leases = store._leases
        self._with_prev = store._prev_kv_in_events
        self._begin = store._revision
        self._events: list[Event] = []

    @property
    def current(self) -> int:
        """The revision reads see: the next one once something changed."""
        return self._begin + 1 if self._events else self._begin

    def put(
        self, key: bytes, value: bytes, lease: int, previous: KeyState | None, before: KeyValue | None
    ) -> None:
        main, sub = self._begin + 1, len(self._events)
        create = main if previous is None else previous.create_revision
        version = 1 if previous is None else previous.version + 1
        event = Event(type=Event.PUT)
        kv = event.kv  # written in place: no copy into the event
        kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value = key, create, main, version, value
        if lease:
            kv.lease = lease
        state = encode_live(main, sub, create, version, lease)
        self._tables.put(HISTORY, revision_key(main, sub), kv.SerializeToString())
        self._tables.put(INDEX, index_key(key, main), state)
        self._tables.put(LIVE, key, state)
        old_lease = 0 if previous is None else previous.lease
        if old_lease != lease:
            if old_lease:
                self._leases.detach(old_lease, key)
            if lease:
                self._leases.attach(lease, key)
        self._record_event(event, before)

    def delete(self, key: bytes, previous: KeyState, before: KeyValue | None) -> None:
        main, sub = self._begin + 1, len(self._events)
        kv = KeyValue(key=key, mod_revision=main)
        self._tables.put(HISTORY, revision_key(main, sub), kv.SerializeToString())
        self._tables.put(INDEX, index_key(key, main), encode_state(KeyState(main, sub, tombstone=True)))
        self._tables.delete(LIVE, key)
        if previous.lease:
            self._leases.detach(previous.lease, key)
        self._record_event(Event(type=Event.DELETE, kv=kv), before)

    def _record_event(self, event: Event, before: KeyValue | None) -> None:
        if self._with_prev and before is not None:
            event.prev_kv.CopyFrom(before)
        self._events.append(event)

    def finish(self) -> tuple[Event, ...]:
        if self._events:
            self._store._moved_to(self._begin + 1)
        return tuple(self._events)


def _zero(state: KeyState) -> int:
    return 0


_TARGETS = {
    Compare.VERSION: lambda state: state.version,
    Compare.CREATE: lambda state: state.create_revision,
    Compare.MOD: lambda state: state.mod_revision,
    Compare.LEASE: lambda state: state.lease,
}


def _holds(compare: Compare, actual: int | bytes) -> bool:
    """etcd's compareKV once the key's field is known: the compare's own
    field for its target (unset: 0 or empty), then its result (an unknown
    result holds; an unknown target compares 0 with 0)."""
    target = compare.target
    if target == Compare.VALUE:
        wanted: int | bytes = compare.value
    elif target == Compare.VERSION:
        wanted = compare.version
    elif target == Compare.CREATE:
        wanted = compare.create_revision
    elif target == Compare.MOD:
        wanted = compare.mod_revision
    elif target == Compare.LEASE:
        wanted = compare.lease
    else:
        wanted = actual = 0
    if compare.result == Compare.EQUAL:
        return actual == wanted
    if compare.result == Compare.NOT_EQUAL:
        return actual != wanted
    if compare.result == Compare.GREATER:
        return actual > wanted  # type: ignore[operator]
    if compare.result == Compare.LESS:
        return actual < wanted  # type: ignore[operator]
    return True
