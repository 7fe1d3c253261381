"""Hostile input against the gRPC API of a real ``dkv`` process, and the Raft
peer service on the same port: arbitrary bytes as keys and values round-trip
exactly; empty keys, oversize keys and values, unknown methods and request
messages that are not protobuf at all get their status (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, UNIMPLEMENTED), are logged once and change nothing; the
node stays alive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import event, given
from hypothesis import strategies as st

from dkv.pb import kv_pb2, kv_pb2_grpc
from tests.hostile import MAX_BODY, MAX_KEY, Node, api_lines, fuzz_settings, rejections, start_node

pytestmark = pytest.mark.process

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    yield from start_node(tmp_path_factory.mktemp("hostile-grpc"))


@pytest.fixture(scope="module")
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        f"127.0.0.1:{node.rpc_port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> kv_pb2_grpc.KVStub:
    return kv_pb2_grpc.KVStub(channel)


def call(fn: Callable[..., Any], request: Any) -> tuple[Code, Any]:
    """(OK, reply) or (error code, details)."""
    try:
        return Code.OK, fn(request, timeout=15)
    except grpc.RpcError as e:
        return e.code(), e.details()


def expect_rejected(node: Node, fn: Callable[..., Any], request: Any, code: Code, details: str | None = None) -> None:
    """The call fails with code (and details), moves nothing, is logged once."""
    before = node.indexes()
    got, got_details = call(fn, request)
    logged = node.log.new()
    assert got == code, (got, got_details)
    if details is not None:
        assert got_details == details
    assert node.indexes() == before
    if code is not Code.UNIMPLEMENTED:  # unknown methods never reach dkv
        assert rejections(logged) == 1 and len(api_lines(logged)) == 1, logged
    else:
        assert api_lines(logged) == [], logged


key_bytes = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([1, 511, 512, 513, MAX_KEY - 1, MAX_KEY]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
value_bytes = st.one_of(
    st.binary(max_size=256),
    st.sampled_from([0, 4096, MAX_BODY - 1, MAX_BODY]).map(lambda n: bytes(i * 7 % 256 for i in range(n))),
)
consistencies = st.sampled_from([kv_pb2.LINEARIZABLE, kv_pb2.SERIALIZABLE, 2, 99, -1])


@fuzz_settings(120)
@given(key=key_bytes, value=value_bytes, consistency=consistencies)
def test_random_bytes_round_trip(
    node: Node, stub: kv_pb2_grpc.KVStub, key: bytes, value: bytes, consistency: int
) -> None:
    """Any key (1..max bytes) and value (0..max bytes) is stored, read and
    deleted exactly; each write is one log entry; nothing is logged."""
    before = node.indexes()
    assert call(stub.Put, kv_pb2.PutRequest(key=key, value=value)) == (Code.OK, kv_pb2.PutResponse())
    code, reply = call(stub.Get, kv_pb2.GetRequest(key=key, consistency=consistency))
    assert code == Code.OK, reply
    assert (reply.key, reply.value) == (key, value)
    assert call(stub.Delete, kv_pb2.DeleteRequest(key=key)) == (Code.OK, kv_pb2.DeleteResponse())
    assert call(stub.Get, kv_pb2.GetRequest(key=key, consistency=consistency)) == (Code.NOT_FOUND, "key not found")
    assert node.indexes()[0] == before[0] + 2
    assert api_lines(node.log.new()) == []


@fuzz_settings(60)
@given(
    size=st.one_of(st.integers(MAX_KEY + 1, 4 * MAX_KEY), st.sampled_from([MAX_KEY + 1, 1024 * 1024])),
    method=st.sampled_from(["Put", "Get", "Delete"]),
    consistency=consistencies,
)
def test_oversize_keys(node: Node, stub: kv_pb2_grpc.KVStub, size: int, method: str, consistency: int) -> None:
    """A key over the limit is RESOURCE_EXHAUSTED in every method."""
    key = b"\xfe" * size
    request = {
        "Put": kv_pb2.PutRequest(key=key, value=b"v"),
        "Get": kv_pb2.GetRequest(key=key, consistency=consistency),
        "Delete": kv_pb2.DeleteRequest(key=key),
    }[method]
    message = f"key is {size} bytes; the limit is {MAX_KEY}"
    expect_rejected(node, getattr(stub, method), request, Code.RESOURCE_EXHAUSTED, message)


@pytest.mark.parametrize("size", [MAX_BODY + 1, 2 * MAX_BODY, 4 * 1024 * 1024])
def test_oversize_values(node: Node, stub: kv_pb2_grpc.KVStub, size: int) -> None:
    """A value over --max-body-size is RESOURCE_EXHAUSTED and not stored."""
    message = f"value is {size} bytes; the limit is {MAX_BODY}"
    expect_rejected(node, stub.Put, kv_pb2.PutRequest(key=b"big", value=b"x" * size), Code.RESOURCE_EXHAUSTED, message)
    assert node.read(b"big") is None


@fuzz_settings(30)
@given(value=value_bytes, consistency=consistencies, method=st.sampled_from(["Put", "Get", "Delete"]))
def test_empty_key(node: Node, stub: kv_pb2_grpc.KVStub, value: bytes, consistency: int, method: str) -> None:
    """An empty key is INVALID_ARGUMENT whatever comes with it."""
    request = {
        "Put": kv_pb2.PutRequest(key=b"", value=value),
        "Get": kv_pb2.GetRequest(key=b"", consistency=consistency),
        "Delete": kv_pb2.DeleteRequest(key=b""),
    }[method]
    expect_rejected(node, getattr(stub, method), request, Code.INVALID_ARGUMENT, "key must not be empty")


def identity(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize(
    "method",
    ["/dkv.v0.KV/Nope", "/dkv.v0.KV/put", "/dkv.v0.KV/", "/dkv.v0.Nope/Get", "/dkv.v1.KV/Get",
     "/dkv.raft.v0.Raft/Nope", "/nope", "/", "/dkv.v0.KV/Get/extra"],
)  # fmt: skip
def test_unknown_methods(node: Node, channel: grpc.Channel, method: str) -> None:
    """A method no service has is UNIMPLEMENTED, whatever the message."""
    for payload in (b"", b"\x0a\x01k", b"\xff" * 10):
        expect_rejected(node, channel.unary_unary(method, identity, identity), payload, Code.UNIMPLEMENTED)


MESSAGES = {"Put": kv_pb2.PutRequest, "Get": kv_pb2.GetRequest, "Delete": kv_pb2.DeleteRequest,
            "Status": kv_pb2.StatusRequest}  # fmt: skip


@fuzz_settings(250)
@given(
    method=st.sampled_from(sorted(MESSAGES)),
    payload=st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=1, max_size=40).map(lambda b: b"\x0a" + bytes([len(b)]) + b),  # key, then more
        st.tuples(st.binary(max_size=40), st.binary(max_size=40)).map(
            lambda kv: b"\x0a" + bytes([len(kv[0])]) + kv[0] + b"\x12" + bytes([len(kv[1]) + 5]) + kv[1]
        ),  # the value's length lies
    ),
)
def test_garbage_request_messages(node: Node, channel: grpc.Channel, method: str, payload: bytes) -> None:
    """Raw bytes as the request message: what does not parse as the method's
    message is INVALID_ARGUMENT (it used to be UNKNOWN, unlogged, with
    protobuf's exception in the details), logged once, changes nothing; what
    does parse is served as that message would be."""
    fn = channel.unary_unary(f"/dkv.v0.KV/{method}", identity, identity)
    try:
        request = MESSAGES[method].FromString(payload)
    except DecodeError:
        event("not a message")
        expect_rejected(node, fn, payload, Code.INVALID_ARGUMENT, f"malformed {MESSAGES[method].__name__} message")
        return
    before = node.indexes()
    code, reply = call(fn, payload)
    after = node.indexes()
    logged = node.log.new()
    event(f"parsed: {code.name}")
    if method == "Status":
        assert code == Code.OK and kv_pb2.StatusResponse.FromString(reply).id == "a"
    elif not request.key:
        assert (code, reply) == (Code.INVALID_ARGUMENT, "key must not be empty")
    elif len(request.key) > MAX_KEY:
        assert code == Code.RESOURCE_EXHAUSTED
    elif method == "Get":
        assert code in (Code.OK, Code.NOT_FOUND), (code, reply)
    else:
        assert code == Code.OK, (code, reply)
        assert after[0] == before[0] + 1
        value = node.read(request.key)
        assert value == (request.value if method == "Put" else None)
        return
    assert after == before
    assert len(api_lines(logged)) == (1 if code not in (Code.OK, Code.NOT_FOUND) else 0), logged


@pytest.mark.parametrize(
    ("method", "message"),
    [("AddMember", kv_pb2.AddMemberRequest), ("PromoteMember", kv_pb2.PromoteMemberRequest),
     ("RemoveMember", kv_pb2.RemoveMemberRequest), ("TransferLeader", kv_pb2.TransferLeaderRequest)],
)  # fmt: skip
def test_garbage_cluster_messages(node: Node, channel: grpc.Channel, method: str, message: type) -> None:
    """The Cluster service parses its requests the same way: garbage is
    INVALID_ARGUMENT, logged once, and changes no membership."""
    fn = channel.unary_unary(f"/dkv.v0.Cluster/{method}", identity, identity)
    expect_rejected(node, fn, b"\xff\xff\xff", Code.INVALID_ARGUMENT, f"malformed {message.__name__} message")


@pytest.mark.parametrize(
    ("method", "kind", "message"),
    [("Stream", "stream_unary", "Batch"), ("InstallSnapshot", "stream_stream", "SnapshotChunk")],
)
def test_garbage_raft_messages(node: Node, channel: grpc.Channel, method: str, kind: str, message: str) -> None:
    """The peer service on the same port parses its streams the same way:
    garbage ends the call with INVALID_ARGUMENT (it used to be UNKNOWN,
    unlogged), logged once, and moves nothing."""
    fn = getattr(channel, kind)(f"/dkv.raft.v0.Raft/{method}", identity, identity)
    before = node.indexes()
    with pytest.raises(grpc.RpcError) as caught:
        reply = fn(iter([b"\xff\xff\xff"]), timeout=15)
        if kind == "stream_stream":
            list(reply)  # the error surfaces while reading the answers
    logged = node.log.new()
    assert (caught.value.code(), caught.value.details()) == (Code.INVALID_ARGUMENT, f"malformed {message} message")
    assert node.indexes() == before
    rejected = [line for line in logged.splitlines() if "rejected Raft" in line]
    assert len(rejected) == 1 and f"rejected Raft {method} from" in rejected[0], logged
    assert rejected[0].endswith(f"malformed {message} message"), logged


def test_node_survived(node: Node, stub: kv_pb2_grpc.KVStub) -> None:
    """After everything above: alive, serving REST and gRPC, no traceback."""
    node.assert_healthy()
    assert call(stub.Put, kv_pb2.PutRequest(key=b"last", value=b"\x00")) == (Code.OK, kv_pb2.PutResponse())
    code, reply = call(stub.Get, kv_pb2.GetRequest(key=b"last"))
    assert (code, reply.value) == (Code.OK, b"\x00")
