"""Watch on a real single-node stack: etcd's gRPC ``Watch`` stream, the JSON
gateway's ``POST /v3/watch`` and dkv's ``GET /v0/watch`` (Server-Sent
Events), each against writes made through etcd's KV service."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.config import Limits
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from dkv.pb.etcd_kv_pb2 import Event
from tests.conftest import REST_STACKS, Stack, start_stack, wait_for
from tests.test_grpc_kv import wait

TIMEOUT = 10.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.async_yield_fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    s, cleanups = await start_stack(tmp_path)
    yield s
    for cleanup in cleanups:
        await cleanup()


@pytest_twisted.async_yield_fixture(params=REST_STACKS)
async def rest_stack(tmp_path, request) -> AsyncIterator[Stack]:
    """A stack served by each REST stack in turn."""
    s, cleanups = await start_stack(tmp_path, rest=request.param)
    yield s
    for cleanup in cleanups:
        await cleanup()


def create(key: bytes, range_end: bytes = b"", **options: Any) -> pb.WatchRequest:
    return pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=range_end, **options))


def hub_counts(stack: Stack) -> tuple[int, int]:
    return stack.replication.watch_hub.counts


async def grpc_scenario(stack: Stack) -> None:
    async with aio.insecure_channel(stack.rpc_address) as channel:
        kv = pb_grpc.KVStub(channel)
        call = pb_grpc.WatchStub(channel).Watch()

        async def read() -> pb.WatchResponse:
            return await asyncio.wait_for(call.read(), TIMEOUT)

        await kv.Put(pb.PutRequest(key=b"k1", value=b"a"))  # 2
        await kv.Put(pb.PutRequest(key=b"k1", value=b"b"))  # 3
        await call.write(create(b"k", b"l", start_revision=2, prev_kv=True))
        created = await read()
        assert created.created and created.watch_id == 0 and created.header.revision == 3
        replay = await read()
        assert [(e.kv.mod_revision, e.kv.value) for e in replay.events] == [(2, b"a"), (3, b"b")]
        assert replay.events[1].prev_kv.value == b"a"
        # a second watcher on the same stream, client-chosen id, deletes only
        await call.write(create(b"k1", watch_id=7, filters=[pb.WatchCreateRequest.NOPUT]))
        assert (await read()).watch_id == 7
        await call.write(create(b"x", watch_id=7))
        duplicate = await read()
        assert (duplicate.watch_id, duplicate.created, duplicate.canceled) == (-1, True, True)
        assert duplicate.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
        await kv.Put(pb.PutRequest(key=b"k2", value=b"c"))  # 4
        await kv.DeleteRange(pb.DeleteRangeRequest(key=b"k1"))  # 5
        got: dict[int, list[tuple[int, int]]] = {}
        while sum(len(v) for v in got.values()) < 3:
            response = await read()
            got.setdefault(response.watch_id, []).extend((e.kv.mod_revision, e.type) for e in response.events)
        assert got == {0: [(4, Event.PUT), (5, Event.DELETE)], 7: [(5, Event.DELETE)]}
        await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        progress = await read()
        assert (progress.watch_id, progress.header.revision, list(progress.events)) == (-1, 5, [])
        await call.write(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=7)))
        canceled = await read()
        assert (canceled.watch_id, canceled.canceled) == (7, True)
        assert hub_counts(stack) == (1, 0)
        # compaction: a watcher starting below it is cancelled with compact_revision
        await kv.Compact(pb.CompactionRequest(revision=4))
        await call.write(create(b"k", b"l", start_revision=2, watch_id=9))
        assert (await read()).created
        compacted = await read()
        assert (compacted.watch_id, compacted.canceled, compacted.compact_revision) == (9, True, 4)
        # a malformed request aborts the stream (the node goes on)
        broken = channel.stream_stream("/etcdserverpb.Watch/Watch")()
        await broken.write(b"\xff\xff")
        with pytest.raises(aio.AioRpcError) as caught:
            await asyncio.wait_for(broken.read(), TIMEOUT)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        call.cancel()


@pytest_twisted.ensureDeferred
async def test_grpc_watch_stream(stack: Stack) -> None:
    await wait(grpc_scenario(stack))
    await wait_for(lambda: hub_counts(stack) == (0, 0), what="the watchers of the closed streams to be dropped")


@pytest_twisted.ensureDeferred
async def test_fragmented_answers(tmp_path) -> None:
    s, cleanups = await start_stack(tmp_path, limits=Limits(max_body_bytes=4096))
    try:

        async def scenario() -> list[pb.WatchResponse]:
            async with aio.insecure_channel(s.rpc_address) as channel:
                kv = pb_grpc.KVStub(channel)
                for i in range(8):  # replayed in one answer: 8 KB of events
                    await kv.Put(pb.PutRequest(key=b"f%d" % i, value=b"v" * 1000))
                call = pb_grpc.WatchStub(channel).Watch()
                await call.write(create(b"f", b"g", start_revision=1, fragment=True))
                out = [await asyncio.wait_for(call.read(), TIMEOUT)]
                while not out[-1].events or out[-1].fragment:
                    out.append(await asyncio.wait_for(call.read(), TIMEOUT))
                call.cancel()
                return out

        responses = await wait(scenario())
        parts = responses[1:]
        assert len(parts) > 1 and all(p.fragment for p in parts[:-1]) and not parts[-1].fragment
        assert sum(len(p.events) for p in parts) == 8
        assert all(p.ByteSize() <= 4096 for p in parts)
    finally:
        for cleanup in cleanups:
            await cleanup()


class HttpStream:
    """One streaming HTTP request on a raw connection: chunks as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.head = b""

    @classmethod
    async def open(cls, url: str, method: str, path: str, body: bytes = b"", headers: str = "") -> HttpStream:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
        )
        stream = cls(reader, writer)
        stream.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return stream

    async def chunk(self) -> bytes:
        if b"chunked" not in self.head.lower():
            return await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
        size = int(await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT), 16)
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), TIMEOUT)
        return data[:-2]

    def close(self) -> None:
        self.writer.close()


async def put(channel: aio.Channel, key: bytes, value: bytes) -> None:
    await pb_grpc.KVStub(channel).Put(pb.PutRequest(key=key, value=value))


async def gateway_scenario(stack: Stack) -> None:
    async with aio.insecure_channel(stack.rpc_address) as channel:
        await put(channel, b"g", b"1")  # 2
        body = json.dumps({"create_request": {"key": b64(b"g"), "start_revision": "2"}}).encode()
        stream = await HttpStream.open(stack.rest_url, "POST", "/v3/watch", body)
        assert stream.head.startswith(b"HTTP/1.1 200")
        created = json.loads(await stream.chunk())
        assert created["result"]["created"] is True and created["result"]["header"]["revision"] == "2"
        first = json.loads(await stream.chunk())["result"]
        assert first["events"] == [
            {"kv": {"key": b64(b"g"), "create_revision": "2", "mod_revision": "2", "version": "1", "value": b64(b"1")}}
        ]
        await pb_grpc.KVStub(channel).DeleteRange(pb.DeleteRangeRequest(key=b"g"))  # 3
        second = json.loads(await stream.chunk())["result"]
        assert second["events"] == [{"type": "DELETE", "kv": {"key": b64(b"g"), "mod_revision": "3"}}]
        assert second["header"]["revision"] == "3"
        stream.close()
        bad = await HttpStream.open(stack.rest_url, "POST", "/v3/watch", b'{"create_request":')
        assert bad.head.startswith(b"HTTP/1.1 500")  # as etcd's gateway
        body = json.loads(await bad.reader.read(200))
        assert body == {"error": "unexpected EOF", "message": "unexpected EOF", "code": 2}
        bad.close()


@pytest_twisted.ensureDeferred
async def test_gateway_watch(rest_stack: Stack) -> None:
    await wait(gateway_scenario(rest_stack))
    await wait_for(lambda: hub_counts(rest_stack) == (0, 0), what="the gateway watcher to be dropped")


def sse_events(text: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in text.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id"), json.loads(fields["data"])))
    return out


async def sse_scenario(stack: Stack) -> None:
    async with aio.insecure_channel(stack.rpc_address) as channel:
        kv = pb_grpc.KVStub(channel)
        await put(channel, b"s/a", b"1")  # 2
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"2")) for k in (b"s/b", b"s/c")]
        await kv.Txn(pb.TxnRequest(success=ops))  # 3: two events
        path = f"/v0/watch?key={b64(b's/')}&prefix=true&start_revision=2"
        stream = await HttpStream.open(stack.rest_url, "GET", path)
        assert b"text/event-stream" in stream.head
        got: list[tuple[str | None, dict[str, Any]]] = []
        while len(got) < 3:
            got += sse_events(await stream.chunk())
        assert [(i, e["key"], e["mod_revision"]) for i, e in got] == [
            ("2", b64(b"s/a"), 2),
            (None, b64(b"s/b"), 3),
            ("3", b64(b"s/c"), 3),
        ]
        assert got[0][1]["type"] == "PUT" and got[0][1]["value"] == b64(b"1")
        stream.close()
        await kv.DeleteRange(pb.DeleteRangeRequest(key=b"s/a"))  # 4
        resumed = await HttpStream.open(stack.rest_url, "GET", path, headers="Last-Event-ID: 3\r\n")
        again: list[tuple[str | None, dict[str, Any]]] = []
        while not again:
            again += sse_events(await resumed.chunk())
        assert [(i, e["type"], e["mod_revision"]) for i, e in again] == [("4", "DELETE", 4)]
        resumed.close()
        for query in (
            "key=%%%",
            "start_revision=1",
            f"key={b64(b'a')}&start_revision=-1",
            f"key={b64(b'a')}&prefix=maybe",
        ):
            bad = await HttpStream.open(stack.rest_url, "GET", f"/v0/watch?{query}")
            assert bad.head.startswith(b"HTTP/1.1 400"), (query, bad.head)
            bad.close()
        await kv.Compact(pb.CompactionRequest(revision=3))
        old = await HttpStream.open(stack.rest_url, "GET", f"/v0/watch?key={b64(b's/a')}&start_revision=2")
        text = b""
        while b"compacted" not in text:
            text += await old.chunk()
        assert b'event: compacted\ndata: {"compact_revision": 3}' in text
        old.close()


@pytest_twisted.ensureDeferred
async def test_sse_watch(rest_stack: Stack) -> None:
    await wait(sse_scenario(rest_stack))
    await wait_for(lambda: hub_counts(rest_stack) == (0, 0), what="the SSE watchers to be dropped")


async def flood_scenario(stack: Stack) -> int:
    async with aio.insecure_channel(stack.rpc_address) as channel:
        call = pb_grpc.WatchStub(channel).Watch()
        progress = pb.WatchRequest(progress_request=pb.WatchProgressRequest())
        for _ in range(3000):  # more than MAX_BACKLOG answers, none read yet
            await asyncio.wait_for(call.write(progress), TIMEOUT)
        got = 0
        while got < 3000:
            response = await asyncio.wait_for(call.read(), TIMEOUT)
            assert response.watch_id == -1
            got += 1
        call.cancel()
        return got


@pytest_twisted.ensureDeferred
async def test_a_client_that_asks_without_reading_is_paced(stack: Stack) -> None:
    """Requests wait once MAX_BACKLOG answers do; every answer still comes."""
    assert await wait(flood_scenario(stack)) == 3000
