"""dkv.client's KV calls against a 3-member cluster that speaks etcd's v3 API
(etcd and dkv, both today): calls pass a member whose connections are reset
or that holds them without answering, and what is written on one member is
read on every other."""

from __future__ import annotations

import pytest
import pytest_twisted

from dkv.client import Unreachable, txn
from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.proxy import ProxyHub
from tests.compat.client_support import client_for

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest_twisted.ensureDeferred
async def test_calls_move_past_a_member_that_resets_or_hangs(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    with ProxyHub() as hub:
        front = hub.proxy(port_of(api.gateway_urls[0]), name="member 0")
        c = client_for(api, [f"127.0.0.1:{front.port}", *api.gateway_urls[1:]], attempt_timeout=1.0)
        first = await c.put(b"k", b"1")
        assert c.transport.current == 0
        front.refuse()
        second = await c.put(b"k", b"2")  # a refused connection: nothing sent, the next member takes it
        assert second.header.revision == first.header.revision + 1 and c.transport.current == 1
        c.transport.current = 0
        front.blackhole()
        third = await c.put(b"k", b"3")  # no answer: retried on the next member with its idempotency key
        assert third.header.revision == second.header.revision + 1
        front.pass_through()
        done = await c.txn(txn.Txn().when(txn.version(b"k") == 3).then(txn.get(b"k")))
        assert done.succeeded and done.responses[0].kvs[0].value == b"3"  # type: ignore[union-attr]
        for member in api.gateway_urls:
            one = client_for(api, [member])
            kv = await one.get(b"k")
            assert kv is not None and (kv.value, kv.version, kv.mod_revision) == (b"3", 3, third.header.revision)
            await one.close()
        await c.close()
    nowhere = client_for(api, [f"127.0.0.1:{front.port}"], timeout=0.5)
    with pytest.raises(Unreachable):
        await nowhere.get(b"k")


@pytest_twisted.ensureDeferred
async def test_members_and_status_as_the_cluster_says(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    c = client_for(api)
    members = await c.members()
    assert sorted(m.id for m in members) == sorted(api.member_ids())
    status = await c.status()
    assert status.leader in {m.id for m in members} and status.raft_index >= 1
    await c.close()
