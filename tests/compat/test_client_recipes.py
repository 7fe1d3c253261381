"""dkv.client against a 3-member cluster that speaks etcd's v3 API (real
etcd 3.4, and dkv): watch across a lost connection, leases, and the Lock
and Election recipes interoperating with ``etcdctl lock`` and ``etcdctl
elect``. On dkv these skip while it answers 404 for /v3/watch or
/v3/lease/grant (see ``tests.compat.client_support``)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.client import Compacted, Election, Lock, NoElectionLeader, NotFound, txn
from dkv.client.values import DELETE, PUT
from dkv.testing.etcd_cluster import ApiEndpoints, EtcdCluster, etcd_binary
from dkv.testing.process import Process
from dkv.testing.proxy import ProxyHub
from tests.compat.client_support import (
    client_for,
    etcdctl_child,
    eventually,
    printed,
    require_watch,
    require_watch_and_leases,
)
from tests.conftest import wait_for

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest_twisted.ensureDeferred
async def test_a_watch_resumes_on_another_member_when_its_connection_is_cut(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    require_watch(api)
    with ProxyHub() as hub:
        front = hub.proxy(port_of(api.gateway_urls[0]), name="member 0")
        c = client_for(api, [f"127.0.0.1:{front.port}", *api.gateway_urls[1:]])
        writer = client_for(api)
        w = c.watch(b"w/", prefix=True, prev_kv=True)
        start = await w.ready()
        for i in range(5):
            await writer.put(f"w/{i}".encode(), b"a")
        first = [await w.next() for _ in range(5)]
        front.refuse()  # the watch's connection is reset, member 0 cannot be reached any more
        for i in range(5):
            await writer.put(f"w/{i}".encode(), b"b")
        await writer.delete(b"w/", prefix=True)  # one revision, five events
        rest = [await w.next() for _ in range(10)]
        seen = first + rest
        assert [e.revision for e in seen] == [start.revision + 1 + i for i in range(10)] + [start.revision + 11] * 5
        assert [e.type for e in seen] == [PUT] * 10 + [DELETE] * 5
        assert [e.prev_kv.value for e in seen[5:] if e.prev_kv is not None] == [b"a"] * 5 + [b"b"] * 5
        assert w.streams == 2
        w.close()
        await c.close()
        await writer.close()


@pytest_twisted.ensureDeferred
async def test_a_watch_from_a_compacted_revision_raises_compacted(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    require_watch(api)
    c = client_for(api)
    for value in (b"1", b"2", b"3"):
        await c.put(b"k", value)  # revisions 2, 3, 4
    await c.compact(4)
    w = c.watch(b"k", start_revision=2)
    with pytest.raises(Compacted) as e:
        await w.next()
    assert e.value.compact_revision == 4
    replay = c.watch(b"k", start_revision=4)
    assert (await replay.next()).kv.value == b"3"
    replay.close()
    await c.close()


@pytest_twisted.ensureDeferred
async def test_leases_grant_keep_alive_time_to_live_and_revoke(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    c = client_for(api)
    lease = await c.grant(30)
    assert lease.ttl == 30 and lease.id in await c.leases()
    await c.put(b"owned", b"v", lease=lease.id)
    kv = await c.get(b"owned")
    assert kv is not None and kv.lease == lease.id
    alive = await lease.time_to_live(keys=True)
    assert (alive.id, alive.granted_ttl, alive.keys) == (lease.id, 30, (b"owned",)) and 0 < alive.ttl <= 30
    assert await lease.keep_alive_once() == 30
    loop = lease.keep_alive()
    await wait_for(lambda: loop.renewals >= 1, what="a keep-alive")
    await lease.revoke()
    assert await c.get(b"owned") is None
    assert (await c.time_to_live(lease.id)).ttl == -1
    with pytest.raises(NotFound, match="requested lease not found"):
        await lease.revoke()
    with pytest.raises(NotFound):
        await lease.keep_alive_once()
    loop.stop()
    watched = c.keep_alive(lease.id, 3)  # a loop on a lease that is gone reports it lost
    reason = await watched.lost
    assert isinstance(reason, NotFound) and not watched.running
    await c.close()


@pytest_twisted.ensureDeferred
async def test_a_lock_excludes_etcdctl_lock_and_is_excluded_by_it(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    c = client_for(api)
    lock = Lock(c, b"jobs", ttl=10)
    await lock.acquire()
    assert lock.key == b"jobs/" + format(lock.session.lease_id, "x").encode()  # type: ignore[union-attr]
    marker = tmp_path / "etcdctl-held"
    waiter = etcdctl_child(api, tmp_path / "waiter.log", "lock", "jobs", "--", "touch", str(marker))
    procs.append(waiter)

    async def keys_under(prefix: bytes) -> int:
        return (await c.prefix(prefix)).count

    async def queued() -> bool:
        return await keys_under(b"jobs/") == 2

    await eventually(queued, what="etcdctl lock to queue its key behind ours")
    assert not marker.exists()
    await lock.release()
    await wait_for(marker.exists, 20, "etcdctl lock to run its command once released")
    await wait_for(lambda: not waiter.alive, 20, "etcdctl lock to exit")
    assert waiter.returncode == 0 and await keys_under(b"jobs/") == 0

    holder = etcdctl_child(api, tmp_path / "holder.log", "lock", "jobs")
    procs.append(holder)
    await wait_for(lambda: len(printed(holder)) >= 1, 20, "etcdctl lock to hold the lock and print its key")
    held_key = printed(holder)[0]
    assert held_key.startswith("jobs/") and await keys_under(b"jobs/") == 1
    second = Lock(c, b"jobs", ttl=10)
    acquiring = defer.ensureDeferred(second.acquire())
    await eventually(queued, what="our lock to queue its key behind etcdctl's")
    assert not acquiring.called
    holder.signal(signal.SIGINT)  # etcdctl unlocks on SIGINT
    await acquiring
    assert second.key is not None and await c.get(held_key.encode()) is None
    await second.release()
    await c.close()


@pytest_twisted.ensureDeferred
async def test_etcdctl_elect_observes_a_dkv_leader_and_the_reverse(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    c = client_for(api)
    election = Election(c, b"chief", ttl=10)
    with pytest.raises(NoElectionLeader):
        await election.leader()
    await election.campaign(b"dkv-one")
    observer = etcdctl_child(api, tmp_path / "observer.log", "elect", "-l", "chief")
    procs.append(observer)
    key = election.key.decode()  # type: ignore[union-attr]
    await wait_for(lambda: printed(observer) == [key, "dkv-one"], 20, "etcdctl elect -l to see the leader")
    await election.proclaim(b"dkv-two")
    await wait_for(lambda: printed(observer)[2:] == [key, "dkv-two"], 20, "etcdctl elect -l to see the proclamation")
    await election.close()

    candidate = etcdctl_child(api, tmp_path / "candidate.log", "elect", "chief", "etcd-proposal")
    procs.append(candidate)
    mine = Election(c, b"chief", ttl=10).observe()
    leader = await mine.next()
    assert leader.value == b"etcd-proposal" and leader.key.startswith(b"chief/")
    await wait_for(lambda: len(printed(candidate)) >= 2, 20, "etcdctl elect to print its key")
    assert printed(candidate)[:2] == [leader.key.decode(), "etcd-proposal"]
    rival = Election(c, b"chief", ttl=10)
    campaigning = defer.ensureDeferred(rival.campaign(b"dkv-three"))

    async def two_candidates() -> bool:
        return (await c.prefix(b"chief/")).count == 2

    await eventually(two_candidates, what="our candidate to queue behind etcdctl's")
    assert not campaigning.called
    candidate.signal(signal.SIGINT)  # etcdctl resigns on SIGINT
    await campaigning
    assert (await rival.leader()).value == b"dkv-three"
    assert (await mine.next()).value == b"dkv-three"
    mine.close()
    await rival.close()
    assert (await c.txn(txn.Txn().then(txn.get(b"chief/", prefix=True)))).responses[0].count == 0  # type: ignore[union-attr]
    await c.close()


@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")
@pytest_twisted.ensureDeferred
async def test_a_watch_and_a_lock_survive_the_member_they_use_being_killed() -> None:
    """Real node failure (etcd only: the fixture gives no handle on members):
    the watch resumes on a live member without loss or repeat; a lock's
    session keeps its lease alive through the other members."""
    with EtcdCluster() as etcd:
        etcd.start()
        api = etcd.endpoints()
        c = client_for(api)
        w = c.watch(b"k")
        await w.ready()
        victim = etcd.names[c.transport.current]
        lock = Lock(c, b"held", ttl=5)
        await lock.acquire()
        await c.put(b"k", b"1")
        assert (await w.next()).kv.value == b"1"
        etcd.members[victim].kill()
        for value in (b"2", b"3"):
            await c.put(b"k", value)
        assert [(await w.next()).kv.value for _ in range(2)] == [b"2", b"3"]
        assert w.streams >= 2 and etcd.names[c.transport.current] != victim
        renewals = lock.session.keep_alive.renewals  # type: ignore[union-attr]
        await wait_for(lambda: lock.session.keep_alive.renewals >= renewals + 2, 20, "keep-alives")  # type: ignore[union-attr]
        assert await c.get(lock.key) is not None  # type: ignore[arg-type]
        await lock.release()
        w.close()
        await c.close()
