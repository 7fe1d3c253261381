"""The etcd JSON gateway mapping against what etcd 3.4.23's gateway answers
(the samples of /work/shared/etcd-gateway-facts.md), byte for byte; the
headers carry the sample's cluster, member and term, as the API layer will
fill them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.api import etcd_json
from dkv.api.etcd_json import (
    MalformedRequest,
    format_error,
    format_etcd_error,
    format_response,
    format_stream_result,
    http_status,
    parse_request,
)
from dkv.mvcc import MvccStore, errors
from dkv.pb import etcd_kv_pb2, etcd_rpc_pb2
from dkv.storage.tables import MemoryTables
from tests.test_proto_json import RESPONSES, messages

CLUSTER, MEMBER, TERM = 9283402572641457184, 1279009630658182889, 2
HEADER = '"cluster_id":"9283402572641457184","member_id":"1279009630658182889"'


def answered(response):
    """The response as the gateway sends it: the API layer fills the header."""
    response.header.cluster_id, response.header.member_id, response.header.raft_term = CLUSTER, MEMBER, TERM
    return format_response(response).decode()


def header(revision: int) -> str:
    return f'"header":{{{HEADER},"revision":"{revision}","raft_term":"2"}}'


@pytest.fixture
def store() -> MvccStore:
    return MvccStore(MemoryTables())


def test_the_kv_samples(store) -> None:
    put = parse_request(b'{"key":"Zm9v","value":"YmFy"}', etcd_rpc_pb2.PutRequest)
    assert answered(store.put(put).response) == "{" + header(2) + "}"

    put = parse_request(b'{"key":"Zm9v","value":"YmF6","prev_kv":true}', etcd_rpc_pb2.PutRequest)
    assert answered(store.put(put).response) == (
        "{" + header(3) + ',"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1",'
        '"value":"YmFy"}}'
    )

    get = parse_request(b'{"key":"Zm9v"}', etcd_rpc_pb2.RangeRequest)
    assert answered(store.range(get)) == (
        "{" + header(3) + ',"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2",'
        '"value":"YmF6"}],"count":"1"}'
    )

    txn = parse_request(
        b'{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmF6"}],'
        b'"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}',
        etcd_rpc_pb2.TxnRequest,
    )
    assert answered(store.txn(txn).response) == (
        "{" + header(4) + ',"succeeded":true,"responses":[{"response_put":{"header":{"revision":"4"}}}]}'
    )

    delete = parse_request(b'{"key":"Zm9v","prev_kv":true}', etcd_rpc_pb2.DeleteRangeRequest)
    assert answered(store.delete_range(delete).response) == (
        "{" + header(5) + ',"deleted":"1","prev_kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"4",'
        '"version":"3","value":"cXV4"}]}'
    )


def test_defaults_are_omitted(store) -> None:
    """ "a range that finds nothing answers only {"header":{...}} (no kvs, no
    count); succeeded:false is absent\""""
    assert answered(store.range(etcd_rpc_pb2.RangeRequest(key=b"none"))) == "{" + header(1) + "}"
    txn = etcd_rpc_pb2.TxnRequest(compare=[etcd_rpc_pb2.Compare(key=b"k", target=etcd_rpc_pb2.Compare.VALUE)])
    assert answered(store.txn(txn).response) == "{" + header(1) + "}"


def test_member_list_status_and_lease_samples() -> None:
    members = etcd_rpc_pb2.MemberListResponse()
    members.header.cluster_id, members.header.member_id, members.header.raft_term = CLUSTER, MEMBER, TERM
    members.members.add(
        ID=MEMBER, name="default", peerURLs=["http://127.0.0.1:2480"], clientURLs=["http://127.0.0.1:2479"]
    )
    assert format_response(members).decode() == (
        '{"header":{' + HEADER + ',"raft_term":"2"},"members":[{"ID":"1279009630658182889","name":"default",'
        '"peerURLs":["http://127.0.0.1:2480"],"clientURLs":["http://127.0.0.1:2479"]}]}'
    )
    status = etcd_rpc_pb2.StatusResponse(
        version="3.4.23", dbSize=20480, leader=MEMBER, raftIndex=8, raftTerm=2, raftAppliedIndex=8, dbSizeInUse=16384
    )
    status.header.revision = 1
    assert answered(status) == (
        "{" + header(1) + ',"version":"3.4.23","dbSize":"20480","leader":"1279009630658182889","raftIndex":"8",'
        '"raftTerm":"2","raftAppliedIndex":"8","dbSizeInUse":"16384"}'
    )
    assert parse_request(b'{"TTL":"30"}', etcd_rpc_pb2.LeaseGrantRequest).TTL == 30
    grant = etcd_rpc_pb2.LeaseGrantResponse(ID=4533332883009431053, TTL=30)
    grant.header.revision = 1
    assert answered(grant) == "{" + header(1) + ',"ID":"4533332883009431053","TTL":"30"}'


def test_watch_stream_samples() -> None:
    """Each message of a stream is {"result": ...} on its own line; a PUT
    event's type (the default) is omitted."""
    request = parse_request(b'{"create_request":{"key":"Zm9v","start_revision":"1"}}', etcd_rpc_pb2.WatchRequest)
    assert (request.create_request.key, request.create_request.start_revision) == (b"foo", 1)
    created = etcd_rpc_pb2.WatchResponse(created=True)
    created.header.revision = 1
    assert format_stream_result(created) == b'{"result":{"header":{"revision":"1"},"created":true}}\n'
    batch = etcd_rpc_pb2.WatchResponse()
    batch.events.add(kv=etcd_kv_pb2.KeyValue(key=b"foo", mod_revision=2, create_revision=2, version=1, value=b"bar"))
    batch.events.add(type=etcd_kv_pb2.Event.DELETE, kv=etcd_kv_pb2.KeyValue(key=b"foo", mod_revision=3))
    assert format_stream_result(batch) == (
        b'{"result":{"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1",'
        b'"value":"YmFy"}},{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"3"}}]}}\n'
    )
    canceled = etcd_rpc_pb2.WatchResponse(canceled=True, compact_revision=3)
    assert format_stream_result(canceled) == b'{"result":{"canceled":true,"compact_revision":"3"}}\n'


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            errors.EmptyKey(),
            400,
            '{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}',
        ),
        (errors.Compacted(), 400, '{"error":"etcdserver: mvcc: required revision has been compacted",'
         '"message":"etcdserver: mvcc: required revision has been compacted","code":11}'),
        (errors.FutureRevision(), 400, '{"error":"etcdserver: mvcc: required revision is a future revision",'
         '"message":"etcdserver: mvcc: required revision is a future revision","code":11}'),
        (errors.LeaseNotFound(), 404, '{"error":"etcdserver: requested lease not found",'
         '"message":"etcdserver: requested lease not found","code":5}'),
        (MalformedRequest("unexpected EOF"), 400, '{"error":"unexpected EOF","message":"unexpected EOF","code":3}'),
    ],
)  # fmt: skip
def test_error_samples(error, status: int, body: str) -> None:
    assert format_etcd_error(error) == (status, body.encode())


def test_the_empty_key_sample(store) -> None:
    """`{"key":""}` → "etcdserver: key is not provided", code 3."""
    with pytest.raises(errors.EmptyKey):
        store.range(parse_request(b'{"key":""}', etcd_rpc_pb2.RangeRequest))


@pytest.mark.parametrize(
    ("code", "status"), [(0, 200), (3, 400), (4, 504), (5, 404), (8, 429), (9, 412), (11, 400), (14, 503), (99, 500)]
)
def test_http_status(code: int, status: int) -> None:
    assert http_status(code) == status


# ---- reading requests ----


def test_enums_by_name_or_number_and_int64_as_string_or_number() -> None:
    request = parse_request(
        b'{"key":"Zm9v","range_end":"AA==","sort_order":"DESCEND","sort_target":2,"limit":"3","revision":7}',
        etcd_rpc_pb2.RangeRequest,
    )
    assert (request.range_end, request.sort_order, request.sort_target, request.limit, request.revision) == (
        b"\x00",
        etcd_rpc_pb2.RangeRequest.DESCEND,
        etcd_rpc_pb2.RangeRequest.CREATE,
        3,
        7,
    )


def test_camel_case_names_and_unknown_fields() -> None:
    request = parse_request(
        b'{"key":"Zm9v","rangeEnd":"Zm9w","countOnly":true,"nonsense":[1]}', etcd_rpc_pb2.RangeRequest
    )
    assert (request.range_end, request.count_only) == (b"fop", True)


@pytest.mark.parametrize("body", [b"", b"  \n", b"null"])
def test_an_empty_body_is_an_empty_request(body: bytes) -> None:
    assert parse_request(body, etcd_rpc_pb2.RangeRequest) == etcd_rpc_pb2.RangeRequest()


def test_like_gos_decoder() -> None:
    """Go's json.Decoder reads the first value and stops; a repeated name
    keeps its last value."""
    assert parse_request(b'{"key":"Zm9v"} {"key":', etcd_rpc_pb2.RangeRequest).key == b"foo"
    assert parse_request(b'{"key":"YQ==","key":"Yg=="}', etcd_rpc_pb2.RangeRequest).key == b"b"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"key":', "unexpected EOF"),
        (b'{"key":"Zm9v"', "unexpected EOF"),
        (b'{"key":"Zm9', "unexpected EOF"),
        (b'{"key":tr', "unexpected EOF"),
        (b"{x}", "invalid character 'x' looking for beginning of object key string"),
        (b'{"key" "x"}', "invalid character '\"' after object key"),
        (b'{"key":"x" "y"}', "invalid character '\"' after object key:value pair"),
        (b'{"key":[1 2]}', "invalid character '2' after array element"),
        (b"{'key':1}", "invalid character '\\'' looking for beginning of object key string"),
        (b'{"key":?}', "invalid character '?' looking for beginning of value"),
        (b"[1]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        (b"42", "json: cannot unmarshal number into Go value of type map[string]json.RawMessage"),
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest) as raised:
        parse_request(body, etcd_rpc_pb2.RangeRequest)
    assert raised.value.message == message and raised.value.code == 3


def test_wrong_types_are_malformed() -> None:
    with pytest.raises(MalformedRequest):
        parse_request(b'{"key":5}', etcd_rpc_pb2.RangeRequest)
    with pytest.raises(MalformedRequest):
        parse_request(b'{"sort_order":"SIDEWAYS"}', etcd_rpc_pb2.RangeRequest)


def test_strings_are_escaped_as_go_escapes_them() -> None:
    member = etcd_rpc_pb2.Member(name='<a&b> "q" \\b \x08\x0c\n é \u2028')
    assert format_response(member) == (
        b'{"name":"\\u003ca\\u0026b\\u003e \\"q\\" \\\\b \\u0008\\u000c\\n \xc3\xa9 \\u2028"}'
    )
    assert format_error(3, "a<b")[1] == b'{"error":"a\\u003cb","message":"a\\u003cb","code":3}'


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab<>&\\"\b\f\n\u2028\u2029\x01é'), max_size=12))
def test_go_escapes_are_applied_only_when_needed_and_always_the_same(text: str) -> None:
    """The check that skips the substitution never changes an answer."""
    plain = json.dumps({"k": text}, separators=(",", ":"), ensure_ascii=False)
    always = etcd_json._GO_ESCAPES.sub(lambda m: etcd_json._GO_ESCAPE.get(m.group(0), m.group(0)), plain)
    assert etcd_json._dumps({"k": text}) == always.encode()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RESPONSES).flatmap(lambda t: messages(t.DESCRIPTOR)))
def test_answers_written_directly_are_those_of_the_dict(message) -> None:
    """format_response and format_stream_result write the message's JSON
    without building its dict (``proto_json.to_json``): the same bytes."""
    as_dict = etcd_json._to_dict(message)
    assert format_response(message) == etcd_json._dumps(as_dict)
    assert format_stream_result(message) == etcd_json._dumps({"result": as_dict}) + b"\n"


# -- a Range of one key, written without its messages -----------------------------------------

_KEY_VALUES = st.builds(
    etcd_kv_pb2.KeyValue,
    key=st.binary(min_size=1, max_size=40),
    create_revision=st.integers(0, 2**63 - 1),
    mod_revision=st.integers(0, 2**63 - 1),
    version=st.integers(0, 2**63 - 1),
    value=st.binary(max_size=300),
    lease=st.integers(0, 2**63 - 1),
)
_IDS = st.integers(0, 2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), _KEY_VALUES), _IDS, _IDS, st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_a_range_of_one_key_is_written_as_its_response_would_be(kv, cluster_id, member_id, revision, term) -> None:
    """format_range_of_key writes, byte for byte, what format_response writes
    for the RangeResponse it stands for (zero fields too, left out)."""
    response = etcd_rpc_pb2.RangeResponse(count=1 if kv is not None else 0)
    response.header.cluster_id, response.header.member_id = cluster_id, member_id
    response.header.revision, response.header.raft_term = revision, term
    if kv is not None:
        response.kvs.append(kv)
    record = kv.SerializeToString() if kv is not None else None
    written = etcd_json.format_range_of_key((cluster_id, member_id, revision, term), record)
    assert written == format_response(response)


def test_the_usual_range_of_one_key() -> None:
    kv = etcd_kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=3, version=2, value=b"baz")
    assert etcd_json.format_range_of_key((CLUSTER, MEMBER, 3, TERM), kv.SerializeToString()).decode() == (
        f'{{{header(3)},"kvs":[{{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2",'
        '"value":"YmF6"}],"count":"1"}'
    )
    assert etcd_json.format_range_of_key((CLUSTER, MEMBER, 3, TERM), None).decode() == f"{{{header(3)}}}"


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (b'{"key":"Zm9v"}', (b"foo", False)),
        (b' {"key": "Zm9v", "serializable": true} ', (b"foo", True)),
        (b'{"serializable":false,"key":"Zm9v"}', (b"foo", False)),
        (b'{"key":"Zm9v","key":"YmFy"}', (b"bar", False)),  # the last, as the general path reads it
    ],
)
def test_a_range_of_one_key_is_read_as_parse_request_reads_it(body: bytes, plain) -> None:
    assert etcd_json.parse_range_of_key(body) == plain
    request = parse_request(body, etcd_rpc_pb2.RangeRequest)
    assert (request.key, request.serializable) == plain
    assert [f.name for f, _ in request.ListFields()] == ["key", "serializable"][: 1 + plain[1]]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'{"key":""}',  # EmptyKey: the general path answers it
        b'{"key":"Zm9v","range_end":"AA=="}',
        b'{"key":"Zm9v","limit":"0"}',
        b'{"Key":"Zm9v"}',
        b'{"key":"Zm9v","serializable":"true"}',
        b'{"key":5}',
        b'{"key":"Zm9v"',
        b'{"key":"Zm9v"} x',
        b'{"key":"Zm9"}',  # unpadded: the general path decides
        b'{"key":"-_8="}',  # the URL-safe alphabet: likewise
        b'{"key":"Zm9v\xff"}',
    ],
)
def test_any_other_range_body_is_left_to_the_general_path(body: bytes) -> None:
    assert etcd_json.parse_range_of_key(body) is None


# -- a Put's answer of its header alone, written directly -------------------------------------


@settings(max_examples=200, deadline=None)
@given(_IDS, _IDS, st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.one_of(st.none(), _KEY_VALUES))
def test_a_put_response_is_written_as_format_response_writes_it(cluster_id, member_id, revision, term, prev) -> None:
    response = etcd_rpc_pb2.PutResponse()
    response.header.cluster_id, response.header.member_id = cluster_id, member_id
    response.header.revision, response.header.raft_term = revision, term
    if prev is not None:
        response.prev_kv.CopyFrom(prev)
    assert etcd_json.format_put_response(response) == format_response(response)
