"""etcdctl's lease commands against a 3-member cluster that speaks etcd's
API (etcd itself and dkv, the same assertions): grant, put --lease,
timetolive --keys, keep-alive --once, list, revoke, and the keys gone after
the revoke. Lease ids are random on both, so they are checked by shape and
then used; everything else is compared as etcdctl prints it."""

from __future__ import annotations

import json
import re

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from tests.compat.clients import error_lines, etcdctl, ok

pytestmark = [pytest.mark.process, pytest.mark.etcd]

NOT_FOUND = "etcdserver: requested lease not found"


def grant(api: ApiEndpoints, ttl: int) -> str:
    """A new lease's id as etcdctl prints it (hex)."""
    out = ok(etcdctl(api, "lease", "grant", str(ttl)))
    found = re.fullmatch(r"lease ([0-9a-f]+) granted with TTL\((\d+)s\)\n", out)
    assert found is not None, out
    assert found.group(2) == str(ttl)
    return found.group(1)


def test_lease_grant_put_timetolive_keep_alive_list_and_revoke(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    first, lease = grant(api, 60), grant(api, 60)
    assert ok(etcdctl(api, "put", f"--lease={lease}", "k1", "v1")) == "OK\n"
    assert ok(etcdctl(api, "put", f"--lease={lease}", "k2", "v2")) == "OK\n"
    assert ok(etcdctl(api, "put", "plain", "v")) == "OK\n"
    ttl = ok(etcdctl(api, "lease", "timetolive", lease, "--keys"))
    # etcd lists a lease's keys in no particular order (dkv in key order): either is etcd's answer.
    assert re.fullmatch(
        rf"lease {lease} granted with TTL\(60s\), remaining\((59|60)s\), attached keys\(\[(k1 k2|k2 k1)\]\)\n", ttl
    ), ttl
    ttl = ok(etcdctl(api, "lease", "timetolive", lease))
    assert re.fullmatch(rf"lease {lease} granted with TTL\(60s\), remaining\((59|60)s\)\n", ttl), ttl
    assert ok(etcdctl(api, "lease", "keep-alive", "--once", lease)) == f"lease {lease} keepalived with TTL(60)\n"
    listed = ok(etcdctl(api, "lease", "list")).splitlines()
    # etcd lists leases in no particular order (its lessor's map); dkv in id order.
    assert listed[0] == "found 2 leases" and sorted(listed[1:]) == sorted((first, lease)), listed
    assert ok(etcdctl(api, "lease", "revoke", lease)) == f"lease {lease} revoked\n"
    assert ok(etcdctl(api, "get", "k", "--prefix")) == ""
    assert ok(etcdctl(api, "get", "plain")) == "plain\nv\n"
    assert ok(etcdctl(api, "lease", "timetolive", lease)) == f"lease {lease} already expired\n"
    as_json = json.loads(ok(etcdctl(api, "lease", "timetolive", lease, "-w", "json")))
    assert (as_json["ttl"], as_json["granted-ttl"], as_json["keys"]) == (-1, 0, None)
    revoked_twice = etcdctl(api, "lease", "revoke", lease)
    assert revoked_twice.returncode == 1
    assert error_lines(revoked_twice) == [f"Error: failed to revoke lease ({NOT_FOUND})"]
    unknown = etcdctl(api, "put", "--lease=1234", "k", "v")
    assert unknown.returncode == 1 and error_lines(unknown) == [f"Error: {NOT_FOUND}"]
    assert etcdctl(api, "lease", "keep-alive", "--once", lease).returncode != 0
    assert ok(etcdctl(api, "lease", "list")) == f"found 1 leases\n{first}\n"


def test_the_revoke_deletes_every_key_at_one_revision(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    lease = grant(api, 60)  # grants make no revision
    for i in range(5):
        assert ok(etcdctl(api, "put", f"--lease={lease}", f"key{i}", "v")) == "OK\n"  # revisions 2..6
    ok(etcdctl(api, "lease", "revoke", lease))
    status = json.loads(ok(etcdctl(api, "endpoint", "status", "-w", "json", "--endpoints", api.grpc_addresses[0])))
    assert status[0]["Status"]["header"]["revision"] == 7
