# test-case-name: tests.watch.test_watch_api
"""etcd's ``Watch`` RPC (``etcdserverpb.Watch/Watch``) on the RPC port: one
bidirectional stream, many watchers, kept by a ``dkv.watch.WatchSession``.

Requests are read as they come (a message that does not parse aborts the
stream with INVALID_ARGUMENT, logged once) until ``MAX_BACKLOG`` answers
wait; answers are written in the session's order, one at a time, so a
client that reads slowly holds at most its watchers' bounded queues and
that backlog here. The stream ends when the client
half-closes it (as etcd's) or goes away; either drops its watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from dkv.aio import wait
from dkv.api.etcd_v3 import ApiError, answer_error, token_from_metadata
from dkv.logs import logger
from dkv.mvcc.errors import Code
from dkv.node import Node
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb.etcd_rpc_pb2 import ResponseHeader, WatchRequest
from dkv.watch import WatchSession

log = logger("dkv.api.etcd")

_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: Answers a stream may have waiting before its requests are no longer read.
MAX_BACKLOG = 1024


def header_filler(node: Node) -> Callable[[ResponseHeader], None]:
    """node's ``fill_header``, with the ids worked out once (a watch fills
    a header for every answer)."""
    cluster, member = node.cluster_number(), node.member_id()
    replication = node.replication

    def fill(header: ResponseHeader) -> None:
        header.cluster_id = cluster
        header.member_id = member
        raft = replication.raft
        header.raft_term = raft.term if raft is not None else 0

    return fill


def watch_session(node: Node, wake: Any) -> WatchSession:
    """A session on node's hub, its answers capped at the body limit."""
    return WatchSession(
        node.replication.watch_hub,
        header_filler(node),
        wake,
        max_response_bytes=node.limits.max_body_bytes,
        refusal=node.watch_refusal,
    )


async def _read(requests: AsyncIterator[bytes], session: WatchSession, drained: asyncio.Event) -> None:
    async for raw in requests:
        try:
            request = WatchRequest.FromString(raw)
        except DecodeError:
            raise ApiError(Code.INVALID_ARGUMENT, "malformed WatchRequest message") from None
        session.handle(request)
        while session.backlog > MAX_BACKLOG:
            # A client that asks without reading waits, as etcd's control channel makes it.
            drained.clear()
            await drained.wait()


async def _serve(node: Node, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> None:
    node = node.with_token(token_from_metadata(context.invocation_metadata()))
    token_ready = node.token_ready()
    if token_ready is not None:
        await wait(token_ready)
    ready, drained = asyncio.Event(), asyncio.Event()
    session = watch_session(node, ready.set)
    reader = asyncio.ensure_future(_read(requests, session, drained))
    try:
        while True:
            response = session.take_encoded()
            while response is not None:
                await context.write(response)
                if session.backlog <= MAX_BACKLOG:
                    drained.set()
                response = session.take_encoded()
            drained.set()
            if reader.done():
                break
            ready.clear()
            waiter = asyncio.ensure_future(ready.wait())
            try:
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        error = None if reader.cancelled() else reader.exception()
    finally:
        reader.cancel()
        session.close()
    if error is not None:
        code, message = answer_error(error)
        log.info("etcd Watch stream refused: {code} {message}", code=_CODES[code].name, message=message)
        await context.abort(_CODES[code], message)


def handler(node: Node) -> Any:
    """The method handler of ``Watch/Watch``."""

    async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext) -> None:
        await _serve(node, requests, context)

    return grpc.stream_stream_rpc_method_handler(handle)  # answers are written serialized


def register(server: aio.Server, node: Node) -> None:
    full_name = pb.DESCRIPTOR.services_by_name["Watch"].full_name
    handlers = {"Watch": handler(node)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full_name, handlers),))
    server.add_registered_method_handlers(full_name, handlers)
