# test-case-name: tests.test_grpc_kv
"""The gRPC API: ``dkv.v0.KV`` on the RPC port, mirroring the REST API.

Handlers run on the asyncio loop that is also Twisted's reactor; a Deferred
from the node is awaited as ``d.asFuture(loop)``. ``dkv.errors`` map to
status codes (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE,
DEADLINE_EXCEEDED), and, with auth enabled, UNAUTHENTICATED (no or a bad
``token`` metadata) and PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from grpc import aio
from twisted.internet.defer import Deferred

from dkv.aio import wait
from dkv.auth.node_auth import v0_error
from dkv.errors import DkvError, InvalidArgument, KeyNotFound, Overloaded, error_metadata
from dkv.idempotency import key_from_metadata
from dkv.logs import logger
from dkv.mvcc.errors import EtcdError
from dkv.node import Node
from dkv.pb import kv_pb2, kv_pb2_grpc

log = logger("dkv.api.grpc")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def outcome(context: aio.ServicerContext, method: str, d: Deferred[Any]) -> Any:
    """The result of d, or the call aborted with its DkvError's status."""
    try:
        return await wait(d)
    except DkvError as e:
        await abort(context, e, method)
    except EtcdError as e:
        await abort(context, v0_error(e), method)


async def abort(context: aio.ServicerContext, error: DkvError, method: str) -> None:
    """Abort the call with error's code and message, and its outcome
    (``DkvError.outcome``) and class name in ``dkv-outcome`` and
    ``dkv-error`` trailing metadata (``dkv.errors.error_metadata``)."""
    # Not-found is an answer, not a mistake (as in REST); admission control
    # logs its refusals itself, a line per interval.
    if not isinstance(error, (KeyNotFound, Overloaded)):
        name = _CODES[error.grpc_code].name
        log.info("rejected gRPC {method}: {code} {error}", method=method, code=name, error=error.message)
    # The outcome and the error's kind travel as typed fields, so a follower
    # that forwarded the call tells "not applied" (503) from "unknown" (504),
    # and 429 from 413 or 507 (all RESOURCE_EXHAUSTED), without reading the
    # message (``dkv.transport.cluster_client.to_dkv_error``).
    await context.abort(_CODES[error.grpc_code], error.message, trailing_metadata=error_metadata(error))


async def _keyed(node: Node, context: aio.ServicerContext, method: str) -> Node:
    """node keyed by the call's ``idempotency-key`` metadata (a bad key
    aborts the call with INVALID_ARGUMENT), carrying its ``token``."""
    try:
        return (await ready_caller(node, context)).keyed(key_from_metadata(context.invocation_metadata()))
    except DkvError as e:
        await abort(context, e, method)
        raise  # abort raises; never reached


async def ready_caller(node: Node, context: aio.ServicerContext) -> Node:
    """``caller``, once this node has applied the entry that issued the
    call's token (``Node.token_ready``)."""
    found = caller(node, context)
    ready = found.token_ready()
    if ready is not None:
        await wait(ready)
    return found


def caller(node: Node, context: aio.ServicerContext) -> Node:
    """node carrying the call's auth token (metadata ``token``)."""
    for key, value in context.invocation_metadata() or ():
        if key == "token":
            return node.with_token(value if isinstance(value, str) else value.decode("latin-1"))
    return node


class KVServicer(kv_pb2_grpc.KVServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Put(self, request, context):  # noqa: N802 - gRPC names
        node = await _keyed(self.node, context, "Put")
        await outcome(context, "Put", node.put(request.key, request.value))
        return kv_pb2.PutResponse()

    async def Get(self, request, context):  # noqa: N802
        linearizable = request.consistency != kv_pb2.SERIALIZABLE
        node = await ready_caller(self.node, context)
        value = await outcome(context, "Get", node.get(request.key, linearizable=linearizable))
        return kv_pb2.GetResponse(key=request.key, value=value)

    async def Delete(self, request, context):  # noqa: N802
        node = await _keyed(self.node, context, "Delete")
        await outcome(context, "Delete", node.delete(request.key))
        return kv_pb2.DeleteResponse()

    async def Status(self, request, context):  # noqa: N802
        st = self.node.status()
        return kv_pb2.StatusResponse(
            **{k: v for k, v in st.items() if k != "members"},
            members=[kv_pb2.MemberStatus(**m) for m in st["members"]],
        )


def _parsing(handler: Any, request_type: Any, method: str, admit: Callable[[], None] | None = None) -> Any:
    """handler, taking the raw request bytes: a message that does not parse is
    INVALID_ARGUMENT (gRPC's own deserializer would answer UNKNOWN, unlogged).
    With admit (a write's admission check), a call it refuses (Overloaded)
    is aborted before its request is parsed."""

    async def parse_then_handle(raw: bytes, context: aio.ServicerContext) -> Any:
        if admit is not None:
            try:
                admit()
            except Overloaded as e:
                await abort(context, e, method)
        try:
            request = request_type.FromString(raw)
        except DecodeError:
            await abort(context, InvalidArgument(f"malformed {request_type.DESCRIPTOR.name} message"), method)
        return await handler(request, context)

    return parse_then_handle


def register_parsed(
    server: aio.Server,
    servicer: Any,
    module: Any,
    service_name: str,
    writes: Collection[str] = (),
    admit: Callable[[], None] | None = None,
) -> None:
    """Register servicer for service_name of module (a generated ``*_pb2``)
    as the generated ``add_*Servicer_to_server`` would, but with requests
    parsed by ``_parsing``; the methods named in writes are checked by
    admit (admission control) before they are parsed."""
    service = module.DESCRIPTOR.services_by_name[service_name]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            _parsing(
                getattr(servicer, m.name), GetMessageClass(m.input_type), m.name, admit if m.name in writes else None
            ),
            response_serializer=GetMessageClass(m.output_type).SerializeToString,
        )
        for m in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def register(server: aio.Server, node: Node) -> None:
    register_parsed(server, KVServicer(node), kv_pb2, "KV", writes=("Put", "Delete"), admit=node.check_write_admission)
