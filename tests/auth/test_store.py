"""The replicated auth state: etcd's Auth writes, rules and errors."""

from __future__ import annotations

import pytest

from dkv.auth.store import AuthStore, load
from dkv.mvcc import errors
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb.etcd_auth_pb2 import Permission
from dkv.storage.tables import MemoryTables


@pytest.fixture
def tables() -> MemoryTables:
    return MemoryTables()


def apply(tables: MemoryTables, field: str, request: object) -> object:
    return AuthStore(tables).apply(field, request)


def add_user(tables: MemoryTables, name: str, hashed: str = "scrypt$h") -> None:
    apply(tables, "user_add", pb.AuthUserAddRequest(name=name, hashedPassword=hashed))


def enable_root(tables: MemoryTables) -> None:
    add_user(tables, "root")
    apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="root", role="root"))
    apply(tables, "auth_enable", pb.AuthEnableRequest())


def test_enabling_needs_the_root_user_with_the_root_role(tables: MemoryTables) -> None:
    with pytest.raises(errors.RootUserNotExist):
        apply(tables, "auth_enable", pb.AuthEnableRequest())
    add_user(tables, "root")
    with pytest.raises(errors.RootRoleNotExist):
        apply(tables, "auth_enable", pb.AuthEnableRequest())
    apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="root", role="root"))
    apply(tables, "auth_enable", pb.AuthEnableRequest())
    assert load(tables).enabled
    apply(tables, "auth_disable", pb.AuthDisableRequest())
    assert not load(tables).enabled


def test_users_hold_the_hash_they_were_given_and_sorted_roles(tables: MemoryTables) -> None:
    add_user(tables, "alice", "scrypt$abc")
    with pytest.raises(errors.UserAlreadyExist):
        add_user(tables, "alice")
    with pytest.raises(errors.UserEmpty):
        add_user(tables, "")
    for name in ("zeta", "beta"):
        apply(tables, "role_add", pb.AuthRoleAddRequest(name=name))
        apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="alice", role=name))
    apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="alice", role="beta"))  # again: no-op
    with pytest.raises(errors.RoleNotFound):
        apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="alice", role="nope"))
    with pytest.raises(errors.UserNotFound):
        apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="bob", role="beta"))
    alice = load(tables).users["alice"]
    assert alice.password == b"scrypt$abc"
    assert list(alice.roles) == ["beta", "zeta"]
    apply(tables, "user_change_password", pb.AuthUserChangePasswordRequest(name="alice", hashedPassword="scrypt$new"))
    assert load(tables).users["alice"].password == b"scrypt$new"
    with pytest.raises(errors.RoleNotGranted):
        apply(tables, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name="alice", role="other"))
    apply(tables, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name="alice", role="zeta"))
    assert list(load(tables).users["alice"].roles) == ["beta"]


def test_deleting_a_role_takes_it_from_every_user(tables: MemoryTables) -> None:
    apply(tables, "role_add", pb.AuthRoleAddRequest(name="r"))
    with pytest.raises(errors.RoleAlreadyExist):
        apply(tables, "role_add", pb.AuthRoleAddRequest(name="r"))
    with pytest.raises(errors.RoleEmpty):
        apply(tables, "role_add", pb.AuthRoleAddRequest(name=""))
    add_user(tables, "u")
    apply(tables, "user_grant_role", pb.AuthUserGrantRoleRequest(user="u", role="r"))
    apply(tables, "role_delete", pb.AuthRoleDeleteRequest(role="r"))
    state = load(tables)
    assert "r" not in state.roles and list(state.users["u"].roles) == []
    with pytest.raises(errors.RoleNotFound):
        apply(tables, "role_delete", pb.AuthRoleDeleteRequest(role="r"))


def test_permissions_are_kept_by_key_and_replaced_for_the_same_range(tables: MemoryTables) -> None:
    apply(tables, "role_add", pb.AuthRoleAddRequest(name="r"))

    def grant(kind: int, key: bytes, end: bytes = b"") -> None:
        perm = Permission(permType=kind, key=key, range_end=end)
        apply(tables, "role_grant_permission", pb.AuthRoleGrantPermissionRequest(name="r", perm=perm))

    grant(Permission.READ, b"/b/", b"/b0")
    grant(Permission.WRITE, b"/a")
    grant(Permission.READWRITE, b"/b/", b"/b0")
    perms = [(p.permType, p.key, p.range_end) for p in load(tables).roles["r"].keyPermission]
    assert perms == [(Permission.WRITE, b"/a", b""), (Permission.READWRITE, b"/b/", b"/b0")]
    with pytest.raises(errors.PermissionNotGranted):
        apply(tables, "role_revoke_permission", pb.AuthRoleRevokePermissionRequest(role="r", key=b"/b/"))
    apply(tables, "role_revoke_permission", pb.AuthRoleRevokePermissionRequest(role="r", key=b"/b/", range_end=b"/b0"))
    assert [p.key for p in load(tables).roles["r"].keyPermission] == [b"/a"]
    with pytest.raises(errors.RoleNotFound):
        apply(tables, "role_grant_permission", pb.AuthRoleGrantPermissionRequest(name="nope", perm=Permission()))


def test_root_cannot_lose_root_while_auth_is_enabled(tables: MemoryTables) -> None:
    enable_root(tables)
    with pytest.raises(errors.InvalidAuthMgmt):
        apply(tables, "user_delete", pb.AuthUserDeleteRequest(name="root"))
    with pytest.raises(errors.InvalidAuthMgmt):
        apply(tables, "user_revoke_role", pb.AuthUserRevokeRoleRequest(name="root", role="root"))
    with pytest.raises(errors.InvalidAuthMgmt):
        apply(tables, "role_delete", pb.AuthRoleDeleteRequest(role="root"))
    apply(tables, "auth_disable", pb.AuthDisableRequest())
    apply(tables, "user_delete", pb.AuthUserDeleteRequest(name="root"))
    assert "root" not in load(tables).users
    with pytest.raises(errors.UserNotFound):
        apply(tables, "user_delete", pb.AuthUserDeleteRequest(name="root"))


def test_the_auth_revision_moves_with_every_change_and_only_then(tables: MemoryTables) -> None:
    assert load(tables).revision == 1
    add_user(tables, "a")
    assert load(tables).revision == 2
    apply(tables, "auth_disable", pb.AuthDisableRequest())  # already off: nothing changes
    with pytest.raises(errors.UserAlreadyExist):
        add_user(tables, "a")
    assert load(tables).revision == 2


def test_a_user_without_password_stores_no_hash(tables: MemoryTables) -> None:
    request = pb.AuthUserAddRequest(name="svc", hashedPassword="ignored")
    request.options.no_password = True
    apply(tables, "user_add", request)
    user = load(tables).users["svc"]
    assert user.password == b"" and user.options.no_password
