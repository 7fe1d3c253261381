# test-case-name: tests.test_statemachine
"""The state machine commands carried in NORMAL log entries.

A command is a ``dkv.raft.v0.Command`` protobuf: the request id
``(origin, seq)`` and one operation. ``origin`` is random per process start,
``seq`` counts requests within it, so the node that took a request from a
client recognises it when it applies the entry, whoever proposed it.
"""

from __future__ import annotations

import attrs

from dkv.pb import raft_pb2


@attrs.frozen(slots=True)
class RequestId:
    origin: int
    seq: int


def encode_put(rid: RequestId, key: bytes, value: bytes) -> bytes:
    return raft_pb2.Command(
        origin=rid.origin, seq=rid.seq, put=raft_pb2.Put(key=key, value=value)
    ).SerializeToString()


def encode_delete(rid: RequestId, key: bytes) -> bytes:
    return raft_pb2.Command(
        origin=rid.origin, seq=rid.seq, delete=raft_pb2.Delete(key=key)
    ).SerializeToString()


def decode(data: bytes) -> raft_pb2.Command:
    return raft_pb2.Command.FromString(data)
