"""etcdctl's auth commands and ``--user`` against a 3-member cluster, etcd's
and dkv's alike: the same commands, the same output and the same errors
(byte for byte where etcdctl's output is deterministic)."""

from __future__ import annotations

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from tests.compat.clients import error_lines, etcdctl, ok, put_all

pytestmark = [pytest.mark.process, pytest.mark.etcd]

DENIED = ["Error: etcdserver: permission denied"]


def set_up(api: ApiEndpoints) -> None:
    """root, a role with READ on the prefix /app/, alice with it; auth on."""
    put_all(etcdctl, api, ("/app/x", "1"), ("/other", "2"))
    assert ok(etcdctl(api, "user", "add", "root", "--new-user-password=rootpw")) == "User root created\n"
    assert ok(etcdctl(api, "role", "add", "reader")) == "Role reader created\n"
    granted = etcdctl(api, "role", "grant-permission", "reader", "read", "/app/", "--prefix")
    assert ok(granted) == "Role reader updated\n"
    assert ok(etcdctl(api, "user", "add", "alice", "--new-user-password=pw")) == "User alice created\n"
    assert ok(etcdctl(api, "user", "grant-role", "alice", "reader")) == "Role reader is granted to user alice\n"
    # etcdctl adds the root role and grants it to root when the server says it lacks it
    assert ok(etcdctl(api, "auth", "enable")) == "Authentication Enabled\n"


def test_a_reader_of_a_prefix_reads_it_and_nothing_else(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    set_up(api)
    alice = ("--user", "alice:pw")
    assert ok(etcdctl(api, *alice, "get", "/app/x")) == "/app/x\n1\n"
    assert ok(etcdctl(api, *alice, "get", "/app/", "--prefix")) == "/app/x\n1\n"
    assert error_lines(etcdctl(api, *alice, "put", "/app/x", "2")) == DENIED
    assert error_lines(etcdctl(api, *alice, "get", "/other")) == DENIED
    assert error_lines(etcdctl(api, *alice, "get", "", "--prefix")) == DENIED
    assert error_lines(etcdctl(api, "get", "/app/x")) == ["Error: etcdserver: user name is empty"]
    assert error_lines(etcdctl(api, "--user", "alice:wrong", "get", "/app/x")) == [
        "Error: etcdserver: authentication failed, invalid user ID or password"
    ]
    assert error_lines(etcdctl(api, *alice, "user", "list")) == DENIED
    assert error_lines(etcdctl(api, *alice, "auth", "disable")) == DENIED
    assert ok(etcdctl(api, *alice, "user", "get", "alice")) == "User: alice\nRoles: reader\n"

    root = ("--user", "root:rootpw")
    assert ok(etcdctl(api, *root, "put", "/app/x", "3")) == "OK\n"
    assert ok(etcdctl(api, *root, "get", "", "--prefix")) == "/app/x\n3\n/other\n2\n"
    assert ok(etcdctl(api, *root, "user", "list")) == "alice\nroot\n"
    assert ok(etcdctl(api, *root, "role", "list")) == "reader\nroot\n"
    assert ok(etcdctl(api, *root, "user", "get", "root")) == "User: root\nRoles: root\n"
    assert ok(etcdctl(api, *root, "role", "get", "reader")) == (
        "Role reader\nKV Read:\n\t[/app/, /app0) (prefix /app/)\nKV Write:\n"
    )
    assert error_lines(etcdctl(api, *root, "user", "delete", "root")) == ["Error: etcdserver: invalid auth management"]
    assert error_lines(etcdctl(api, *root, "user", "add", "alice", "--new-user-password=x")) == [
        "Error: etcdserver: user name already exists"
    ]
    assert error_lines(etcdctl(api, *root, "user", "get", "nobody")) == ["Error: etcdserver: user name not found"]
    assert error_lines(etcdctl(api, *root, "role", "get", "nothing")) == ["Error: etcdserver: role name not found"]

    # a grant of READWRITE lets alice write; revoking the permission takes all back
    assert ok(etcdctl(api, *root, "role", "grant-permission", "reader", "readwrite", "/app/", "--prefix")) == (
        "Role reader updated\n"
    )
    assert ok(etcdctl(api, *alice, "put", "/app/x", "4")) == "OK\n"
    revoked = etcdctl(api, *root, "role", "revoke-permission", "reader", "/app/", "--prefix")
    assert ok(revoked) == "Permission of range [/app/, /app0) is revoked from role reader\n"
    assert error_lines(etcdctl(api, *alice, "get", "/app/x")) == DENIED

    assert ok(etcdctl(api, *root, "auth", "disable")) == "Authentication Disabled\n"
    assert ok(etcdctl(api, "get", "/other")) == "/other\n2\n"
    assert ok(etcdctl(api, *alice, "put", "/other", "5")) == "OK\n"  # credentials are not needed any more


def test_membership_changes_and_lease_revokes_need_permission(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    set_up(api)
    alice = ("--user", "alice:pw")
    assert error_lines(etcdctl(api, *alice, "member", "add", "x", "--peer-urls=http://127.0.0.1:1")) == DENIED
    root = ("--user", "root:rootpw")
    granted = ok(etcdctl(api, *root, "lease", "grant", "100"))
    lease = granted.split()[1]
    assert ok(etcdctl(api, *root, "put", "/other/l", "v", f"--lease={lease}")) == "OK\n"
    assert error_lines(etcdctl(api, *alice, "lease", "revoke", lease)) == [
        "Error: failed to revoke lease (etcdserver: permission denied)"
    ]
    assert ok(etcdctl(api, *root, "lease", "revoke", lease)) == f"lease {lease} revoked\n"
