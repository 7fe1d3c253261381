"""The space quota and the NOSPACE alarm on a real single-node stack: past
``--quota-backend-bytes`` a write raises the alarm and is refused with
etcd's error on every face (gRPC RESOURCE_EXHAUSTED, the gateway's 429,
``/v0``'s 507), while reads, deletes, compaction, lease revokes and the
Alarm calls work; after deleting, compacting and disarming, writes resume."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from grpc import aio

from dkv.config import Limits
from dkv.ids import member_id
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
from dkv.pb.etcd_rpc_pb2 import NOSPACE, AlarmRequest
from tests.conftest import Stack, start_stack, wait_for
from tests.test_grpc_kv import wait
from tests.test_rest import request

QUOTA = 256 * 1024
VALUE = b"v" * (32 * 1024)
NOSPACE_MESSAGE = "etcdserver: mvcc: database space exceeded"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest_twisted.async_yield_fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    s, cleanups = await start_stack(tmp_path, limits=Limits(quota_backend_bytes=QUOTA))
    yield s
    for cleanup in cleanups:
        await cleanup()


async def gateway(stack: Stack, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    reply = await request("POST", stack.rest_url + path, json.dumps(body).encode())
    return reply.status, reply.body


async def fill(stack: Stack) -> int:
    """Put big values until the gateway refuses one; the number that went in."""
    for n in range(100):
        status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"big/%03d" % n), "value": b64(VALUE)})
        if status != 200:
            assert (status, body) == (429, {"error": NOSPACE_MESSAGE, "message": NOSPACE_MESSAGE, "code": 8})
            return n
    raise AssertionError("the quota never refused a write")


@pytest_twisted.ensureDeferred
async def test_quota_raises_the_alarm_and_the_cluster_recovers(stack: Stack) -> None:
    me = str(member_id("a"))
    assert await fill(stack) > 0
    await wait_for(lambda: stack.node.quota.nospace(), what="the alarm applied")
    status, body = await gateway(stack, "/v3/maintenance/alarm", {})
    assert (status, body["alarms"]) == (200, [{"memberID": me, "alarm": "NOSPACE"}])
    # while it is active: growing writes refused on every face
    reply = await request(
        "POST", stack.rest_url + "/v0/kv", json.dumps({"key": b64(b"k"), "value": b64(b"v")}).encode()
    )
    assert reply.status == 507 and reply.body["error"] == NOSPACE_MESSAGE
    status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"small"), "value": b64(b"x")})
    assert (status, body["message"]) == (429, NOSPACE_MESSAGE)  # refused at apply: the alarm is replicated state
    txn = {"success": [{"request_put": {"key": b64(b"t"), "value": b64(b"x")}}]}
    assert (await gateway(stack, "/v3/kv/txn", txn))[0] == 429
    assert (await gateway(stack, "/v3/lease/grant", {"TTL": 60}))[0] == 429
    async with aio.insecure_channel(stack.rpc_address) as channel:
        kv = pb_grpc.KVStub(channel)
        with pytest.raises(aio.AioRpcError) as e:
            await wait(kv.Put(pb.PutRequest(key=b"g", value=b"x")))
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, NOSPACE_MESSAGE)
        lease = pb_grpc.LeaseStub(channel)
        with pytest.raises(aio.AioRpcError) as e:
            await wait(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60)))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = await request("GET", stack.rest_url + "/health")
    assert (reply.status, reply.body) == (503, {"health": "false", "reason": "ALARM NOSPACE"})
    # reads, deletes (a delete-only txn too), compaction, defragment work
    status, body = await gateway(stack, "/v3/kv/range", {"key": b64(b"big/000")})
    assert status == 200 and body["count"] == "1"
    delete_txn = {"success": [{"request_delete_range": {"key": b64(b"big/000")}}]}
    assert (await gateway(stack, "/v3/kv/txn", delete_txn))[0] == 200
    status, body = await gateway(stack, "/v3/kv/deleterange", {"key": b64(b"big/"), "range_end": b64(b"big0")})
    assert status == 200 and int(body["deleted"]) > 0
    revision = int(body["header"]["revision"])
    assert (await gateway(stack, "/v3/kv/compaction", {"revision": revision, "physical": True}))[0] == 200
    assert (await gateway(stack, "/v3/maintenance/defragment", {}))[0] == 200
    # disarm (as etcdctl: a DEACTIVATE for each listed alarm); writes resume
    status, body = await gateway(
        stack, "/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": me, "alarm": "NOSPACE"}
    )
    assert (status, body["alarms"]) == (200, [{"memberID": me, "alarm": "NOSPACE"}])
    assert not stack.node.quota.nospace()
    status, body = await gateway(stack, "/v3/maintenance/alarm", {})
    assert (status, body.get("alarms", [])) == (200, [])
    status, _ = await gateway(stack, "/v3/kv/put", {"key": b64(b"small"), "value": b64(b"x")})
    assert status == 200
    reply = await request("GET", stack.rest_url + "/health")
    assert reply.status == 200


class _FakeReplication:
    """What Quota uses of the driver: a clock, request ids, propose, view,
    and whether its disk is full."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.proposed: list[bytes] = []
        self.disk_full = False
        self.disk_full_listeners: list = []
        self.running = True

    def next_request_id(self):
        from dkv.commands import RequestId

        return RequestId(1, len(self.proposed) + 1)

    def propose(self, rid, payload: bytes):
        from twisted.internet.defer import Deferred

        self.proposed.append(payload)
        return Deferred()  # never applied here

    def view(self):
        import contextlib

        from dkv.mvcc import MvccView
        from dkv.storage.tables import MemoryTables

        return contextlib.nullcontext(MvccView(MemoryTables()))


def test_quota_measures_at_most_every_tenth_of_a_second_and_raises_the_alarm_once() -> None:
    from dkv.commands import decode
    from dkv.mvcc.errors import NoSpace
    from dkv.quota import Quota

    measured: list[int] = []
    in_use = [1000]

    def size() -> tuple[int, int]:
        measured.append(in_use[0])
        return in_use[0] * 2, in_use[0]

    replication = _FakeReplication()
    quota = Quota(replication, size, 7, quota_bytes=2000)  # type: ignore[arg-type]
    quota.check(100)
    quota.check(100)
    assert len(measured) == 1  # the second used the estimate: 1000 + 2 x 100 + 100
    quota.check(300)  # the estimate (1000 + 2 x 200 + 300) is still within the quota
    assert len(measured) == 1
    quota.check(300)  # the estimate (1000 + 2 x 500 + 300) is not: measured again, and it fits
    assert len(measured) == 2
    replication.clock.advance(0.1)
    quota.check(50)  # stale: measured again
    assert len(measured) == 3
    in_use[0] = 1990
    quota.check(10)  # within 0.1 s the estimate (1000 + 2 x 50 + 10) serves
    assert len(measured) == 3
    replication.clock.advance(0.1)
    with pytest.raises(NoSpace):
        quota.check(100)
    with pytest.raises(NoSpace):
        quota.check(100)
    [alarm] = [decode(p).alarm for p in replication.proposed]  # raised once while in flight
    assert (alarm.action, alarm.memberID, alarm.alarm) == (AlarmRequest.ACTIVATE, 7, NOSPACE)


def test_a_write_checked_while_the_node_stops_is_refused_as_not_applied() -> None:
    """The store closes as the node stops, before the REST port does: a write
    that arrives in between is told the node is shutting down (503, safe to
    retry), not a 500 from measuring a closed store."""
    from dkv.errors import NoLeader
    from dkv.quota import Quota

    def size() -> tuple[int, int]:
        raise AssertionError("the store is not measured while the node stops")

    replication = _FakeReplication()
    replication.running = False
    quota = Quota(replication, size, 7, quota_bytes=2000)  # type: ignore[arg-type]
    with pytest.raises(NoLeader, match="shutting down"):
        quota.check(100)


@pytest_twisted.ensureDeferred
async def test_a_physical_compaction_answers_once_the_db_holds_it(stack: Stack) -> None:
    """etcd's ``physical``: the answer comes once the compacted history is
    gone from this member's db, not only from its applied state (whose
    writes reach the db within 20 ms otherwise)."""
    for n in range(3):
        status, body = await gateway(stack, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v%d" % n)})
        assert status == 200
    revision = int(body["header"]["revision"])
    replication = stack.node.replication
    status, _ = await gateway(stack, "/v3/kv/compaction", {"revision": revision, "physical": True})
    assert status == 200
    assert replication.stored_applied == replication.applied
