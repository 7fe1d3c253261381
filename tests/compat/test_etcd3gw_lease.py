"""etcd3gw's lease and lock calls, unchanged, against the cluster under test
(etcd and dkv alike): grant, put with a lease, refresh (the gateway's
keep-alive), ttl, keys, revoke; a lock is a lease-bound key created in a
txn."""

from __future__ import annotations

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from tests.compat.test_etcd3gw import client

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def test_lease_grant_put_refresh_ttl_keys_and_revoke(v3_cluster: ApiEndpoints) -> None:
    etcd = client(v3_cluster, 1)
    lease = etcd.lease(60)
    assert lease.id > 0
    assert etcd.put("a", "1", lease=lease) is True
    assert etcd.put("b", "2", lease=lease) is True
    assert etcd.put("c", "3") is True
    assert lease.refresh() == 60
    assert 58 <= lease.ttl() <= 60
    assert sorted(lease.keys()) == [b"a", b"b"]
    other = client(v3_cluster, 2)  # another member answers for the same lease
    assert [(m["key"], v) for v, m in other.get_all()] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert lease.revoke() is True
    assert [m["key"] for _, m in etcd.get_all()] == [b"c"]
    assert lease.ttl() == -1
    assert lease.refresh() == -1  # the gateway omits TTL 0: etcd3gw says -1
    assert lease.keys() == []


def test_lock_acquire_and_release(v3_cluster: ApiEndpoints) -> None:
    etcd = client(v3_cluster, 0)
    first, second = etcd.lock("job", ttl=60), etcd.lock("job", ttl=60)
    assert first.acquire() is True
    assert second.acquire() is False
    assert first.refresh() == 60
    assert first.release() is True
    assert second.acquire() is True
    assert first.release() is False  # not its lock any more
    assert second.release() is True
