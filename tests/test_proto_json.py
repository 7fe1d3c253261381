"""dkv.api.proto_json against google.protobuf.json_format: the same JSON
for any etcd message, and the same message for any body it reads."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.api import proto_json
from dkv.pb import etcd_kv_pb2 as kvpb
from dkv.pb import etcd_rpc_pb2 as pb

_LIMITS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind in _LIMITS:
        low, high = _LIMITS[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([0, 1, low, high]))
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20)
    return st.text(max_size=10)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = _class(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if depth >= 3:
                continue
            items = draw(st.lists(messages(field.message_type, depth + 1), min_size=1, max_size=2))
            if field.is_repeated:
                getattr(message, field.name).extend(items)
            else:
                getattr(message, field.name).CopyFrom(items[0])
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def _class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


RESPONSES = [
    pb.RangeResponse, pb.PutResponse, pb.DeleteRangeResponse, pb.TxnResponse, pb.CompactionResponse,
    pb.WatchResponse, pb.LeaseGrantResponse, pb.LeaseTimeToLiveResponse, pb.LeaseLeasesResponse,
    pb.LeaseKeepAliveResponse, pb.MemberListResponse, pb.StatusResponse, pb.HashKVResponse,
    pb.AlarmResponse, pb.SnapshotResponse, kvpb.Event,
]  # fmt: skip
REQUESTS = [pb.RangeRequest, pb.PutRequest, pb.DeleteRangeRequest, pb.LeaseGrantRequest, pb.LeaseKeepAliveRequest,
            pb.CompactionRequest, pb.TxnRequest, pb.HashKVRequest]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(RESPONSES).flatmap(lambda t: messages(t.DESCRIPTOR)))
def test_to_dict_is_json_format(message: Message) -> None:
    fast = proto_json.to_dict(message)
    slow = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert json.dumps(fast) == json.dumps(slow)  # field order included


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(RESPONSES + REQUESTS).flatmap(lambda t: messages(t.DESCRIPTOR)))
def test_to_json_is_the_text_of_to_dict(message: Message) -> None:
    """Any message: responses, and requests (a Compare's target is a oneof
    of scalars: set to zero, it is still written)."""
    text = proto_json.to_json(message, lambda s: json.dumps(s, ensure_ascii=False))
    assert text == json.dumps(proto_json.to_dict(message), separators=(",", ":"), ensure_ascii=False)


def test_to_json_leaves_what_to_dict_hands_to_json_format() -> None:
    from google.protobuf import struct_pb2

    assert proto_json.to_json(struct_pb2.Value(number_value=1.5), str) is None


def _json_value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """What a client may send for field: right, wrong and odd."""
    b64ish = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
    return st.one_of(
        b64ish,
        b64ish.map(lambda s: s.rstrip("=").replace("+", "-").replace("/", "_")),
        st.text(max_size=6),
        st.integers(-(2**65), 2**65),
        st.integers(-(2**65), 2**65).map(str),
        st.sampled_from(["1 ", " 2", "1_0", "0x10", "", "1e3", "-0"]),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.just([]),
        st.just({}),
    )


@st.composite
def bodies(draw: st.DrawFn, message_type: type[Message]) -> tuple[type[Message], dict[str, Any]]:
    fields = draw(st.lists(st.sampled_from(list(message_type.DESCRIPTOR.fields)), max_size=5))
    body: dict[str, Any] = {}
    for field in fields:
        name = draw(st.sampled_from([field.name, field.json_name]))
        body[name] = draw(_json_value(field))
    return message_type, body


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(REQUESTS).flatmap(bodies))
def test_from_dict_reads_what_json_format_reads(case: tuple[type[Message], dict[str, Any]]) -> None:
    message_type, body = case
    fast = proto_json.from_dict(body, message_type)
    if fast is None:
        return  # json_format decides
    slow = message_type()
    json_format.ParseDict(body, slow)  # must not raise: the fast path accepted it
    assert fast == slow


def test_the_hot_requests_take_the_fast_path() -> None:
    put = proto_json.from_dict({"key": "Zm9v", "value": "YmFy", "lease": "7", "prev_kv": True}, pb.PutRequest)
    assert put == pb.PutRequest(key=b"foo", value=b"bar", lease=7, prev_kv=True)
    rng = proto_json.from_dict({"key": "Zm9v", "rangeEnd": "Zm9w", "limit": 10, "serializable": True}, pb.RangeRequest)
    assert rng == pb.RangeRequest(key=b"foo", range_end=b"fop", limit=10, serializable=True)


def test_what_the_fast_path_leaves_to_json_format() -> None:
    assert proto_json.from_dict({"key": "Zm9v", "sort_order": "DESCEND"}, pb.RangeRequest) is None  # enum
    assert proto_json.from_dict({"key": 5}, pb.PutRequest) is None  # a number for bytes
    assert proto_json.from_dict({"key": "Zm9v", "rangeEnd": "YQ", "range_end": "YQ"}, pb.RangeRequest) is None
    assert proto_json.from_dict({"lease": "1 "}, pb.PutRequest) is None
    assert proto_json.from_dict({"lease": True}, pb.PutRequest) is None
    assert proto_json.from_dict({"key": None}, pb.PutRequest) is None
    assert proto_json.from_dict({"unknown": 1}, pb.PutRequest) is None
    assert proto_json.from_dict({"lease": str(2**63)}, pb.PutRequest) is None  # out of range
