"""A deliberately simple model of etcd's multi-version store, for tests.

It keeps a full copy of the keyspace for every revision and answers every
question by brute force over those copies; it never forgets anything
(compaction only moves the compacted revision). ``dkv.mvcc`` must give the
same answers. It shares nothing with dkv.mvcc but the protobuf messages and
the error classes (the vocabulary of the answers); the rules are written
again here, from etcd's documentation and sources, as plainly as possible.
"""

from __future__ import annotations

import itertools

from dkv.mvcc import errors
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from dkv.pb.etcd_rpc_pb2 import (
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    TxnRequest,
    TxnResponse,
)

Keyspace = dict[bytes, KeyValue]


def in_range(key: bytes, start: bytes, range_end: bytes) -> bool:
    """etcd's range rule for (key, range_end)."""
    if range_end == b"":
        return key == start
    if range_end == b"\x00":
        return key >= start
    return start <= key < range_end


def copy(kv: KeyValue) -> KeyValue:
    new = KeyValue()
    new.CopyFrom(kv)
    return new


class Model:
    def __init__(self) -> None:
        #: keyspaces[r]: every key at revision r (index 0 unused; 1: empty store).
        self.keyspaces: list[Keyspace] = [{}, {}]
        #: events[r]: the events of revision r, in order.
        self.history: dict[int, list[Event]] = {}
        self.compacted = -1

    @property
    def revision(self) -> int:
        return len(self.keyspaces) - 1

    # ---- reads ----

    def range(self, request: RangeRequest) -> RangeResponse:
        if not request.key:
            raise errors.EmptyKey()
        return self._range(request, self.revision, self.keyspaces[-1])

    def _range(self, request: RangeRequest, current: int, newest: Keyspace) -> RangeResponse:
        revision = request.revision
        if revision > current:
            raise errors.FutureRevision()
        if revision <= 0:
            revision = current
        if revision < self.compacted:
            raise errors.Compacted()
        keyspace = newest if revision == current else self.keyspaces[revision]
        kvs = [copy(keyspace[k]) for k in sorted(keyspace) if in_range(k, request.key, request.range_end)]
        response = RangeResponse(count=len(kvs))
        response.header.revision = current
        if request.count_only:
            return response
        if request.limit > 0 and request.sort_order == RangeRequest.NONE and not (
            request.max_mod_revision
            or request.min_mod_revision
            or request.max_create_revision
            or request.min_create_revision
        ):
            kvs = kvs[: request.limit + 1]  # etcd reads only these (in key order) before it sorts
        if request.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= request.max_mod_revision]
        if request.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= request.min_mod_revision]
        if request.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= request.max_create_revision]
        if request.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= request.min_create_revision]
        order = request.sort_order
        if order == RangeRequest.NONE and request.sort_target != RangeRequest.KEY:
            order = RangeRequest.ASCEND
        if order in (RangeRequest.ASCEND, RangeRequest.DESCEND):
            field = {
                RangeRequest.KEY: "key",
                RangeRequest.VERSION: "version",
                RangeRequest.CREATE: "create_revision",
                RangeRequest.MOD: "mod_revision",
                RangeRequest.VALUE: "value",
            }[request.sort_target]
            kvs.sort(key=lambda kv: getattr(kv, field), reverse=order == RangeRequest.DESCEND)
        if request.limit > 0 and len(kvs) > request.limit:
            kvs = kvs[: request.limit]
            response.more = True
        for kv in kvs:
            if request.keys_only:
                kv.value = b""
            response.kvs.append(kv)
        return response

    def events(
        self, start: int, end: int | None = None, limit: int | None = None, prev_kv: bool = False
    ) -> list[Event]:
        if start < self.compacted:
            raise errors.Compacted()
        end = self.revision if end is None else min(end, self.revision)
        found: list[Event] = []
        for revision in range(max(start, 1), end + 1):
            batch = []
            for original in self.history.get(revision, []):
                event = Event()
                event.CopyFrom(original)
                event.ClearField("prev_kv")
                if prev_kv and revision - 1 >= self.compacted:
                    before = self.keyspaces[revision - 1].get(event.kv.key)
                    if before is not None:
                        event.prev_kv.CopyFrom(before)
                batch.append(event)
            if limit is not None and found and len(found) + len(batch) > limit:
                break
            found += batch
            if limit is not None and len(found) >= limit:
                break
        return found

    # ---- writes ----

    def put(self, request: PutRequest) -> tuple[PutResponse, list[Event]]:
        self._check_put(request)
        self._check_put_against(request, self.keyspaces[-1])
        write = _Write(self)
        response = write.put(request)
        return response, write.finish()

    def delete_range(self, request: DeleteRangeRequest) -> tuple[DeleteRangeResponse, list[Event]]:
        if not request.key:
            raise errors.EmptyKey()
        write = _Write(self)
        response = write.delete(request)
        return response, write.finish()

    def txn(self, request: TxnRequest) -> tuple[TxnResponse, list[Event]]:
        self._check_txn_shape(request)
        for ops in (request.success, request.failure):
            for path in _paths(ops):
                _check_no_key_written_twice(path)
        before = self.keyspaces[-1]
        path = self._path(request, before)
        for op in path:
            if op.WhichOneof("request") == "request_put":
                self._check_put_against(op.request_put, before)
        for op in path:
            if op.WhichOneof("request") == "request_range":
                revision = op.request_range.revision
                if revision != 0 and revision > self.revision:
                    raise errors.FutureRevision()
                if revision != 0 and revision < self.compacted:
                    raise errors.Compacted()
        write = _Write(self)
        response = write.txn(request, before)
        response.header.revision = write.current
        return response, write.finish()

    def compact(self, revision: int) -> CompactionResponse:
        if revision <= self.compacted:
            raise errors.Compacted()
        if revision > self.revision:
            raise errors.FutureRevision()
        self.compacted = revision
        response = CompactionResponse()
        response.header.revision = self.revision
        return response

    # ---- checks ----

    def _check_put(self, request: PutRequest) -> None:
        if not request.key:
            raise errors.EmptyKey()
        if request.ignore_value and request.value:
            raise errors.ValueProvided()
        if request.ignore_lease and request.lease:
            raise errors.LeaseProvided()

    def _check_put_against(self, request: PutRequest, keyspace: Keyspace) -> None:
        if (request.ignore_value or request.ignore_lease) and request.key not in keyspace:
            raise errors.KeyNotFound()

    def _check_txn_shape(self, request: TxnRequest) -> None:
        for compare in request.compare:
            if not compare.key:
                raise errors.EmptyKey()
        for op in list(request.success) + list(request.failure):
            kind = op.WhichOneof("request")
            if kind is None:
                raise errors.KeyNotFound()
            if kind == "request_txn":
                self._check_txn_shape(op.request_txn)
            elif kind == "request_put":
                self._check_put(op.request_put)
            elif not getattr(op, kind).key:
                raise errors.EmptyKey()

    def _path(self, request: TxnRequest, keyspace: Keyspace) -> list[RequestOp]:
        """Every operation the txn will run, nested ones flattened, with all
        compares evaluated against keyspace."""
        path = []
        for op in request.success if self._holds(request, keyspace) else request.failure:
            if op.WhichOneof("request") == "request_txn":
                path += self._path(op.request_txn, keyspace)
            else:
                path.append(op)
        return path

    def _holds(self, request: TxnRequest, keyspace: Keyspace) -> bool:
        return all(_compare(c, keyspace) for c in request.compare)


def _compare(compare: Compare, keyspace: Keyspace) -> bool:
    kvs = [kv for key, kv in keyspace.items() if in_range(key, compare.key, compare.range_end)]
    if not kvs:
        if compare.target == Compare.VALUE:
            return False
        kvs = [KeyValue()]
    field, wanted = {
        Compare.VALUE: ("value", compare.value),
        Compare.VERSION: ("version", compare.version),
        Compare.CREATE: ("create_revision", compare.create_revision),
        Compare.MOD: ("mod_revision", compare.mod_revision),
        Compare.LEASE: ("lease", compare.lease),
    }[compare.target]
    test = {
        Compare.EQUAL: lambda a: a == wanted,
        Compare.NOT_EQUAL: lambda a: a != wanted,
        Compare.GREATER: lambda a: a > wanted,
        Compare.LESS: lambda a: a < wanted,
    }[compare.result]
    return all(test(getattr(kv, field)) for kv in kvs)


def _paths(ops) -> list[list[RequestOp]]:
    """Every flat list of writes ops can make: one per choice of success or
    failure at each nested txn."""
    choices = []
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_txn":
            nested = op.request_txn
            choices.append(_paths(nested.success) + _paths(nested.failure))
        elif kind in ("request_put", "request_delete_range"):
            choices.append([[op]])
    return [sum(combination, []) for combination in itertools.product(*choices)]


def _check_no_key_written_twice(path: list[RequestOp]) -> None:
    puts = [op.request_put.key for op in path if op.WhichOneof("request") == "request_put"]
    deletes = [op.request_delete_range for op in path if op.WhichOneof("request") == "request_delete_range"]
    if len(puts) != len(set(puts)):
        raise errors.DuplicateKey()
    for key in puts:
        for delete in deletes:
            if in_range(key, delete.key, delete.range_end):
                raise errors.DuplicateKey()


class _Write:
    """One write: a working copy of the newest keyspace and its events."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.begin = model.revision
        self.keyspace = dict(model.keyspaces[-1])
        self.events: list[Event] = []

    @property
    def current(self) -> int:
        return self.begin + 1 if self.events else self.begin

    def put(self, request: PutRequest) -> PutResponse:
        response = PutResponse()
        old = self.keyspace.get(request.key)
        if request.prev_kv and old is not None:
            response.prev_kv.CopyFrom(old)
        new = KeyValue(
            key=request.key,
            value=old.value if request.ignore_value else request.value,
            lease=old.lease if request.ignore_lease else request.lease,
            create_revision=old.create_revision if old is not None else self.begin + 1,
            version=old.version + 1 if old is not None else 1,
            mod_revision=self.begin + 1,
        )
        self.keyspace[request.key] = new
        event = Event(type=Event.PUT, kv=new)
        if old is not None:
            event.prev_kv.CopyFrom(old)
        self.events.append(event)
        response.header.revision = self.current
        return response

    def delete(self, request: DeleteRangeRequest) -> DeleteRangeResponse:
        response = DeleteRangeResponse()
        for key in sorted(self.keyspace):
            if in_range(key, request.key, request.range_end):
                old = self.keyspace.pop(key)
                if request.prev_kv:
                    response.prev_kvs.append(old)
                self.events.append(
                    Event(type=Event.DELETE, kv=KeyValue(key=key, mod_revision=self.begin + 1), prev_kv=old)
                )
                response.deleted += 1
        response.header.revision = self.current
        return response

    def txn(self, request: TxnRequest, before: Keyspace) -> TxnResponse:
        response = TxnResponse(succeeded=self.model._holds(request, before))
        for op in request.success if response.succeeded else request.failure:
            out = response.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                out.response_range.CopyFrom(self.model._range(op.request_range, self.current, self.keyspace))
            elif kind == "request_put":
                out.response_put.CopyFrom(self.put(op.request_put))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self.delete(op.request_delete_range))
            else:
                nested = self.txn(op.request_txn, before)
                nested.header.SetInParent()
                out.response_txn.CopyFrom(nested)
        return response

    def finish(self) -> list[Event]:
        if self.events:
            self.model.keyspaces.append(self.keyspace)
            self.model.history[self.begin + 1] = self.events
        return self.events
