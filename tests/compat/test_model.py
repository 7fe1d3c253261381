"""The cluster under test against the reference model of etcd's store
(``tests/mvcc_model.py``): random sequences of Put, DeleteRange, Txn
(compares, nested txns), Range (at past, present and future revisions, with
limits, sorting and filters) and Compact, sent as JSON through the gateway
of a random member, must get the answers the model gives -- the same
response messages, decoded from the gateway's JSON, but for the header's
cluster id, member id and raft term; or the same error (gRPC code, message
and HTTP status).

Each example starts from an empty keyspace: everything is deleted, the
history compacted at the current revision R, and the model starts at R,
compacted at R. Requests come from ``tests/mvcc/strategies.py`` with two
changes: no leases (none exist), and revisions in compares moved to this
example's revisions (``rebased``).

etcd sorts with Go's sort.Sort, which is not stable in general; on 12 items
or fewer it is an insertion sort, which is, and the strategies' keyspace has
11 keys, so ties come out in key order as in the model.

One rule differs: which transactions write a key twice. The model refuses
any txn with a path of operations that puts a key twice or puts a key a
delete covers. etcd 3.4 (``checkIntervals`` in its v3rpc) looks level by
level: a delete with range end ``"\0"`` (every key from KEY on) is an empty
interval to it and conflicts with nothing, and a put in a nested txn is
checked only against the deletes before it (this level's, and those of
earlier nested txns), so ``[txn{put x}, txn{del x}]`` passes and
``[txn{del x}, txn{put x}]`` does not (``duplicate_key_etcd34`` below;
test_txn_duplicate_keys pins the cases). Steps on which the two rules
disagree are not sent (counted as the event "txn: the duplicate-key rules
differ").

And one case is not drawn at all: a txn with a range at a compacted or
future revision (in a txn, a negative revision counts as compacted). The model
refuses it whole, as etcd's API says; etcd 3.4 refuses it on the member the
client is connected to, but the other members drop the ranges from the txn
they apply and apply its writes (etcd-io/etcd#18667), and from then on the
members' revisions differ.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from dkv.api.etcd_json import http_status
from dkv.mvcc import errors
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
from dkv.testing.etcd_cluster import ApiEndpoints
from tests.mvcc.strategies import deletes, puts, ranges, txns
from tests.mvcc_model import Model

pytestmark = [pytest.mark.process, pytest.mark.etcd]

#: Gateway path and response type of each request type.
ROUTES: dict[type[Message], tuple[str, type[Message]]] = {
    PutRequest: ("/v3/kv/put", PutResponse),
    DeleteRangeRequest: ("/v3/kv/deleterange", DeleteRangeResponse),
    TxnRequest: ("/v3/kv/txn", TxnResponse),
    RangeRequest: ("/v3/kv/range", RangeResponse),
}
MEMBERS = st.integers(0, 2)
EXAMPLES = settings(
    max_examples=50, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def rebased(request: Message, base: int) -> Message:
    """A copy of request without leases, its compares on create and mod
    revisions moved from the strategies' 1, 2, 3 ... to base - 1, base,
    base + 1 ... (0, "no such key", stays)."""
    copy = type(request)()
    copy.CopyFrom(request)
    _rebase(copy, base)
    return copy


def _rebase(message: Message, base: int) -> None:
    if isinstance(message, PutRequest):
        message.lease = 0
    elif isinstance(message, TxnRequest):
        for compare in message.compare:
            if compare.target in (Compare.CREATE, Compare.MOD):
                field = "create_revision" if compare.target == Compare.CREATE else "mod_revision"
                if getattr(compare, field) > 0:
                    setattr(compare, field, base + getattr(compare, field) - 2)
        for op in [*message.success, *message.failure]:
            kind = op.WhichOneof("request")
            if kind is not None:
                _rebase(getattr(op, kind), base)


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def shown(answer: Any) -> Any:
    """An answer for a failure message: a response as JSON."""
    return as_json(answer) if isinstance(answer, Message) else answer


def outcome(call: Any) -> Any:
    """The model's answer: a response message, or (code, message, HTTP status)."""
    try:
        answer = call()
    except errors.EtcdError as error:
        return (int(error.code), error.message, http_status(error.code))
    return answer[0] if isinstance(answer, tuple) else answer


def duplicate_key_etcd34(request: TxnRequest) -> bool:
    """Whether etcd 3.4 refuses request with "duplicate key given in txn
    request": its rule, level by level (see the module's docstring)."""
    try:
        _puts_and_deletes(request.success)
        _puts_and_deletes(request.failure)
    except _Duplicate:
        return True
    return False


class _Duplicate(Exception):
    pass


#: A delete as etcd's interval tree holds it: [begin, end), end b"" meaning
#: no end; an interval whose end is below its begin holds nothing.
Interval = tuple[bytes, bytes]


def _covers(intervals: list[Interval], key: bytes) -> bool:
    return any(begin <= key and (end == b"" or key < end) for begin, end in intervals)


def _puts_and_deletes(ops: Any) -> tuple[set[bytes], list[Interval]]:
    deletes = [
        (op.request_delete_range.key, op.request_delete_range.range_end or op.request_delete_range.key + b"\0")
        for op in ops
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        then_puts, then_deletes = _puts_and_deletes(op.request_txn.success)
        else_puts, else_deletes = _puts_and_deletes(op.request_txn.failure)
        for key in then_puts:
            if key in puts or _covers(deletes, key):
                raise _Duplicate
            puts.add(key)
        for key in else_puts:
            if (key in puts and key not in then_puts) or _covers(deletes, key):
                raise _Duplicate
            puts.add(key)
        deletes += then_deletes + else_deletes
    for op in ops:
        if op.WhichOneof("request") == "request_put":
            key = op.request_put.key
            if key in puts or _covers(deletes, key):
                raise _Duplicate
            puts.add(key)
    return puts, deletes


def range_revisions(request: TxnRequest) -> list[int]:
    """The revisions the ranges of request, nested ones too, ask for (but
    0, the newest; in a txn a negative revision is a compacted one)."""
    found = []
    for op in [*request.success, *request.failure]:
        kind = op.WhichOneof("request")
        if kind == "request_range" and op.request_range.revision != 0:
            found.append(op.request_range.revision)
        elif kind == "request_txn":
            found += range_revisions(op.request_txn)
    return found


class ClusterMatchesModel(RuleBasedStateMachine):
    api: ApiEndpoints  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.base = 1

    def send(self, path: str, request: dict[str, Any], response_type: type[Message], member: int) -> Any:
        """The cluster's answer, as outcome() gives the model's."""
        status, body = self.api.gateway(path, request, member)
        if status != 200:
            assert set(body) >= {"code", "message"}, f"{path} {request}: HTTP {status} {body}"
            return (body["code"], body["message"], status)
        response = json_format.ParseDict(body, response_type())
        for field in ("cluster_id", "member_id", "raft_term"):
            response.header.ClearField(field)  # type: ignore[attr-defined]
        return response

    @initialize()
    def empty_keyspace(self) -> None:
        """Delete every key and compact at the revision that leaves."""
        self.api.ok("/v3/kv/deleterange", {"key": "AA==", "range_end": "AA=="})
        revision = int(self.api.ok("/v3/kv/range", {"key": "AA==", "range_end": "AA==", "count_only": True})
                       ["header"]["revision"])  # fmt: skip
        status, answer = self.api.gateway("/v3/kv/compaction", {"revision": revision})
        assert status == 200 or answer["message"] == errors.Compacted.message, answer
        self.model.keyspaces = [{}] * (revision + 1)
        self.model.compacted = revision
        self.base = revision

    def check(self, request: Message, expected: Any, member: int) -> None:
        path, response_type = ROUTES[type(request)]
        got = self.send(path, as_json(request), response_type, member)
        event(f"{path}: {'error ' + str(expected[0]) if isinstance(expected, tuple) else 'ok'}")
        assert got == expected, (
            f"{path} {as_json(request)} to member {member}:\n  got      {shown(got)}\n  expected {shown(expected)}"
        )

    def revisions(self, *, valid: bool = False) -> st.SearchStrategy[int]:
        """Mostly this example's past and present; sometimes the compacted
        past, the future, or <= 0 (the newest); only the uncompacted past,
        the present and 0 if ``valid``. Drawn as offsets from the example's
        first revision, so that what is drawn does not depend on where the
        cluster's revision happens to stand (Hypothesis replays examples)."""
        newest, compacted = self.model.revision - self.base, self.model.compacted - self.base
        offsets = st.integers(compacted, newest)
        if not valid:
            offsets = st.one_of(offsets, st.integers(compacted - 2, newest + 2))
        base = self.base
        return st.one_of(offsets.map(lambda offset: base + offset), st.sampled_from([0] if valid else [0, -1]))

    @rule(request=puts(), member=MEMBERS)
    def put(self, request: PutRequest, member: int) -> None:
        request = rebased(request, self.base)
        self.check(request, outcome(lambda: self.model.put(request)), member)

    @rule(request=puts(), member=MEMBERS)
    def put_again(self, request: PutRequest, member: int) -> None:
        """(Puts twice as often as the other writes, so keys pile up.)"""
        self.put(request, member)

    @rule(request=deletes(), member=MEMBERS)
    def delete_range(self, request: DeleteRangeRequest, member: int) -> None:
        self.check(request, outcome(lambda: self.model.delete_range(request)), member)

    @rule(data=st.data(), member=MEMBERS)
    def txn(self, data: st.DataObject, member: int) -> None:
        request = rebased(data.draw(txns(self.revisions(valid=True))), self.base)
        if any(not self.model.compacted <= revision <= self.model.revision for revision in range_revisions(request)):
            event("txn: a range at a compacted or future revision, not sent (etcd-io/etcd#18667)")
            return
        trial = copy.deepcopy(self.model)
        expected = outcome(lambda: trial.txn(request))
        model_refuses = isinstance(expected, tuple) and expected[1] == errors.DuplicateKey.message
        if model_refuses != duplicate_key_etcd34(request):
            event("txn: the duplicate-key rules differ")
            return
        self.model = trial
        self.check(request, expected, member)

    @rule(data=st.data(), member=MEMBERS)
    def range(self, data: st.DataObject, member: int) -> None:
        request = data.draw(ranges(self.revisions()))
        self.check(request, outcome(lambda: self.model.range(request)), member)

    @rule(data=st.data(), member=MEMBERS)
    def compact(self, data: st.DataObject, member: int) -> None:
        later = st.integers(1, max(1, self.model.revision - self.model.compacted)).map(
            lambda step, compacted=self.model.compacted: compacted + step
        )  # mostly forward: most revisions below the newest are compacted already
        revision = data.draw(st.one_of(later, later, self.revisions()))
        expected = outcome(lambda: self.model.compact(revision))
        got = self.send("/v3/kv/compaction", {"revision": revision}, CompactionResponse, member)
        event(f"compact: {'error ' + str(expected[0]) if isinstance(expected, tuple) else 'ok'}")
        assert got == expected, f"compaction at {revision} on member {member}"


def test_the_cluster_answers_as_the_model(v3_cluster: ApiEndpoints) -> None:
    ClusterMatchesModel.api = v3_cluster
    run_state_machine_as_test(ClusterMatchesModel, settings=EXAMPLES)


def _put(key: bytes) -> RequestOp:
    return RequestOp(request_put=PutRequest(key=key, value=b"v"))


def _delete(key: bytes, range_end: bytes = b"") -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key=key, range_end=range_end))


def _txn(success: list[RequestOp], failure: tuple[RequestOp, ...] = ()) -> RequestOp:
    return RequestOp(request_txn=TxnRequest(success=success, failure=list(failure)))


#: Operations of one txn branch, and whether etcd 3.4 refuses them as
#: writing a key twice.
DUPLICATE_KEY_CASES = {
    "put and a delete covering it": ([_put(b"x"), _delete(b"a", b"z")], True),
    "a delete from a key on, then a put": ([_delete(b"a", b"\0"), _put(b"b")], False),
    "a put, then a delete from a key on": ([_put(b"b"), _delete(b"a", b"\0")], False),
    "a nested put, then a nested delete": ([_txn([_put(b"x")]), _txn([_delete(b"x")])], False),
    "a nested delete, then a nested put": ([_txn([_delete(b"x")]), _txn([_put(b"x")])], True),
    "a nested put and a delete beside it": ([_txn([_put(b"x")]), _delete(b"x")], True),
    "a nested delete and a put beside it": ([_txn([_delete(b"x")]), _put(b"x")], True),
    "the same put in a nested txn's two branches": ([_txn([_put(b"x")], (_put(b"x"),))], False),
    "puts in two nested txns' branches": ([_txn([], (_put(b"x"),)), _txn([_put(b"x")])], True),
    "a nested delete from a key on, then a put": ([_txn([_delete(b"a", b"\0")]), _put(b"b")], False),
}


#: Cases etcd 3.4 accepts although they write one key twice in one revision
#: (etcd-io/etcd#16380, #22395): dkv refuses them (README, etcd compatibility).
DKV_REFUSES_TOO = {
    "a delete from a key on, then a put",
    "a put, then a delete from a key on",
    "a nested put, then a nested delete",
    "a nested delete from a key on, then a put",
}


def test_txn_duplicate_keys(v3_cluster: ApiEndpoints) -> None:
    """Which transactions are refused as writing a key twice: what etcd 3.4
    refuses (and ``duplicate_key_etcd34`` agrees), and on dkv also the cases
    where etcd writes one key twice in one revision. Each case is tried as
    the success branch of an unconditional txn."""
    refused = {}
    for name, (ops, _) in DUPLICATE_KEY_CASES.items():
        request = TxnRequest(success=ops)
        status, answer = v3_cluster.gateway("/v3/kv/txn", as_json(request))
        assert status == 200 or answer["message"] == errors.DuplicateKey.message, (name, answer)
        refused[name] = status != 200
        if v3_cluster.system == "etcd":
            assert duplicate_key_etcd34(request) == refused[name], name
    expected = {name: duplicate for name, (_, duplicate) in DUPLICATE_KEY_CASES.items()}
    if v3_cluster.system == "dkv":
        expected.update(dict.fromkeys(DKV_REFUSES_TOO, True))
    assert refused == expected


def test_order_none_with_a_target_sorts_only_the_keys_a_limit_reads(v3_cluster: ApiEndpoints) -> None:
    """A Range with order NONE, a target other than KEY and a limit reads
    limit + 1 keys in key order and sorts only those (etcd's rangeLimit
    looks at the request's own order): the key with the oldest mod revision
    is not found if it lies past them. An explicit ASCEND reads all. The
    model answers the same."""
    prefix = b"sort-none/"
    puts = [PutRequest(key=prefix + name, value=b"v") for name in (b"c", b"a", b"b", b"a")]  # c oldest, then b, a
    model = Model()
    for request in puts:
        v3_cluster.ok("/v3/kv/put", as_json(request))
        model.put(request)
    keys = {}
    for order in (RangeRequest.NONE, RangeRequest.ASCEND):
        request = RangeRequest(
            key=prefix, range_end=prefix[:-1] + b"0", limit=1, sort_order=order, sort_target=RangeRequest.MOD
        )
        answer = json_format.ParseDict(v3_cluster.ok("/v3/kv/range", as_json(request)), RangeResponse())
        keys[order] = [kv.key for kv in answer.kvs]
        assert answer.more and answer.count == 3
        assert [kv.key for kv in model.range(request).kvs] == keys[order]
    assert keys == {RangeRequest.NONE: [prefix + b"b"], RangeRequest.ASCEND: [prefix + b"c"]}
