# test-case-name: tests.test_etcd_api
"""etcd's gRPC services (``etcdserverpb.KV``, ``Cluster``, ``Maintenance``) on
the RPC port, beside ``dkv.v0``.

Every method is ``dkv.api.etcd_v3``'s function of the same name: this module
only parses (a message that does not parse is INVALID_ARGUMENT, logged
once), awaits, and aborts with etcd's code and message on failure. A call
with ``idempotency-key`` metadata runs on the node keyed by it
(``Node.keyed``: its writes are applied once; see ``dkv.idempotency``).
``Lease.LeaseKeepAlive`` is a stream: one answer per keep-alive, in order.
``Watch`` is ``dkv.api.watch_grpc``'s stream. The ``token`` metadata (from
``Auth.Authenticate``) names the caller for the permission checks
(``Node.with_token``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from dkv.aio import wait
from dkv.api import watch_grpc
from dkv.api.etcd_v3 import (
    SERVICES,
    SNAPSHOT_CHUNK,
    ApiError,
    Handler,
    answer_error,
    call,
    lease_keep_alive,
    snapshot_file,
    token_from_metadata,
)
from dkv.errors import Overloaded
from dkv.idempotency import key_from_metadata
from dkv.logs import logger
from dkv.mvcc.errors import Code
from dkv.node import Node
from dkv.pb import etcd_rpc_pb2 as pb

log = logger("dkv.api.etcd")

_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: Codes that say the cluster's state, not the client's mistake: logged at debug.
_QUIET = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.DEADLINE_EXCEEDED.value[0]}


async def _abort(context: aio.ServicerContext, method: str, error: BaseException) -> None:
    code, message = answer_error(error)
    # Refusals by admission control are logged by it, a line per interval.
    emit = log.debug if code in _QUIET or isinstance(error, Overloaded) else log.info
    emit("etcd {method} refused: {code} {message}", method=method, code=_CODES[code].name, message=message)
    await context.abort(_CODES[code], message)


#: (service, method) of the calls that always write: refused by admission
#: control before their request is parsed, as the gateway's write paths are.
WRITE_METHODS = frozenset({("KV", "Put"), ("KV", "DeleteRange")})


def _unary(node: Node, method: str, handler: Handler, request_type: Any, writes: bool = False) -> Any:
    """The handler of a unary call; one that writes (``WRITE_METHODS``) is
    refused first if admission control refuses writes now."""

    async def handle(raw: bytes, context: aio.ServicerContext) -> Any:
        if writes:
            try:
                node.check_write_admission()
            except Overloaded as e:
                await _abort(context, method, e)
        try:
            request = request_type.FromString(raw)
        except DecodeError:
            await _abort(context, method, _malformed(request_type))
        try:
            metadata = context.invocation_metadata()
            keyed = node.keyed(key_from_metadata(metadata)).with_token(token_from_metadata(metadata))
            await _token_ready(keyed)
            return await wait(call(handler, keyed, request))
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            await _abort(context, method, e)

    return grpc.unary_unary_rpc_method_handler(handle, response_serializer=lambda m: m.SerializeToString())


async def _token_ready(node: Node) -> None:
    """Wait, if the call's token was issued through another member a moment
    ago, until this one has applied it (``Node.token_ready``)."""
    ready = node.token_ready()
    if ready is not None:
        await wait(ready)


def _malformed(request_type: Any) -> Exception:
    return ApiError(Code.INVALID_ARGUMENT, f"malformed {request_type.DESCRIPTOR.name} message")


def _snapshot(node: Node) -> Any:
    async def handle(raw: bytes, context: aio.ServicerContext) -> AsyncIterator[pb.SnapshotResponse]:
        try:
            caller = node.with_token(token_from_metadata(context.invocation_metadata()))
            await _token_ready(caller)
            path, size = await wait(snapshot_file(caller))
        except Exception as e:  # noqa: BLE001
            await _abort(context, "Snapshot", e)
            return
        try:
            with open(path, "rb") as f:
                sent = 0
                while chunk := f.read(SNAPSHOT_CHUNK):
                    sent += len(chunk)
                    response = pb.SnapshotResponse(blob=chunk, remaining_bytes=size - sent)
                    node.fill_header(response.header)
                    yield response
        finally:
            os.unlink(path)

    return grpc.unary_stream_rpc_method_handler(handle, response_serializer=lambda m: m.SerializeToString())


def _keep_alive(node: Node) -> Any:
    """etcd's LeaseKeepAlive: each request renews its lease and is answered
    (TTL 0: no such lease) before the next is read; a failure (no leader)
    ends the stream with its status, as etcd's does."""

    async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> Any:
        caller = node.with_token(token_from_metadata(context.invocation_metadata()))
        await _token_ready(caller)
        async for raw in requests:
            try:
                request = pb.LeaseKeepAliveRequest.FromString(raw)
            except DecodeError:
                await _abort(context, "LeaseKeepAlive", _malformed(pb.LeaseKeepAliveRequest))
            try:
                d = call(lease_keep_alive, caller, request)
                # On the leader the answer is ready now: skip the trip through the loop.
                yield d.result if d.called and isinstance(d.result, pb.LeaseKeepAliveResponse) else await wait(d)
            except Exception as e:  # noqa: BLE001 - every failure is an answer
                await _abort(context, "LeaseKeepAlive", e)

    return grpc.stream_stream_rpc_method_handler(handle, response_serializer=lambda m: m.SerializeToString())


def register(server: aio.Server, node: Node) -> None:
    for service, methods in SERVICES.items():
        full_name = pb.DESCRIPTOR.services_by_name[service].full_name
        handlers = {
            name: _unary(node, name, handler, request_type, (service, name) in WRITE_METHODS)
            for name, (handler, request_type) in methods.items()
        }
        if service == "Maintenance":
            handlers["Snapshot"] = _snapshot(node)
        if service == "Lease":
            handlers["LeaseKeepAlive"] = _keep_alive(node)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full_name, handlers),))
        server.add_registered_method_handlers(full_name, handlers)
    watch_grpc.register(server, node)
