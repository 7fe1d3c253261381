# test-case-name: tests.test_grpc_kv
"""The gRPC API: ``dkv.v0.KV`` on the RPC port, mirroring the REST API.

Handlers run on the asyncio loop that is also Twisted's reactor; a Deferred
from the node is awaited as ``d.asFuture(loop)``. ``dkv.errors`` map to
status codes (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE,
DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import aio
from twisted.internet.defer import Deferred

from dkv.logs import logger
from dkv.errors import DkvError
from dkv.node import Node
from dkv.pb import kv_pb2, kv_pb2_grpc

log = logger("dkv.api.grpc")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def _await(d: Deferred[Any]) -> Any:
    return await d.asFuture(asyncio.get_running_loop())


async def _abort(context: aio.ServicerContext, error: DkvError, method: str) -> None:
    log.info("rejected gRPC {method}: {code} {error}", method=method, code=_CODES[error.grpc_code].name, error=error.message)
    await context.abort(_CODES[error.grpc_code], error.message)


class KVServicer(kv_pb2_grpc.KVServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Put(self, request, context):  # noqa: N802 - gRPC names
        try:
            await _await(self.node.put(request.key, request.value))
        except DkvError as e:
            await _abort(context, e, "Put")
        return kv_pb2.PutResponse()

    async def Get(self, request, context):  # noqa: N802
        linearizable = request.consistency != kv_pb2.SERIALIZABLE
        try:
            value = await _await(self.node.get(request.key, linearizable=linearizable))
        except DkvError as e:
            await _abort(context, e, "Get")
        return kv_pb2.GetResponse(key=request.key, value=value)

    async def Delete(self, request, context):  # noqa: N802
        try:
            await _await(self.node.delete(request.key))
        except DkvError as e:
            await _abort(context, e, "Delete")
        return kv_pb2.DeleteResponse()

    async def Status(self, request, context):  # noqa: N802
        st = self.node.status()
        return kv_pb2.StatusResponse(
            **{k: v for k, v in st.items() if k != "members"},
            members=[kv_pb2.MemberStatus(**m) for m in st["members"]],
        )


def register(server: aio.Server, node: Node) -> None:
    kv_pb2_grpc.add_KVServicer_to_server(KVServicer(node), server)
