# test-case-name: tests.auth.test_store
"""The replicated auth state and etcd's Auth writes on it.

Three tables of the state machine (in LMDB, copied whole by snapshots):

``auth.users`` -- user name (UTF-8) -> a serialized ``authpb.User``; its
    ``password`` holds the scrypt hash string (``dkv.auth.passwords``), empty
    for a user added with ``no_password``; ``roles`` sorted.
``auth.roles`` -- role name -> a serialized ``authpb.Role``; its
    ``keyPermission`` sorted by key (etcd's order).
``auth.meta`` -- ``enabled`` (b"\\x01" when on; absent: off) and ``revision``
    (i64; absent: 1), moved by every write that changes something.

``AuthStore.apply`` runs one Auth write as etcd's auth store does, with
etcd's errors (a refused write changes nothing), deterministically: no
clock, no randomness, no hashing (the password hash arrives in the command).
``load`` reads the whole state as an ``AuthState`` value, which the node
caches until the next auth write or snapshot.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import attrs

from dkv.auth.permissions import ROOT, Grants
from dkv.mvcc import errors
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb.etcd_auth_pb2 import Permission, Role, User

if TYPE_CHECKING:
    from dkv.storage.tables import Tables, WritableTables

USERS = "auth.users"
ROLES = "auth.roles"
META = "auth.meta"
ENABLED = b"enabled"
REVISION = b"revision"
_I64 = struct.Struct(">q")

#: The Command fields (``proto/raft.proto``) that carry Auth writes.
COMMAND_FIELDS = (
    "auth_enable",
    "auth_disable",
    "user_add",
    "user_delete",
    "user_change_password",
    "user_grant_role",
    "user_revoke_role",
    "role_add",
    "role_delete",
    "role_grant_permission",
    "role_revoke_permission",
)


@attrs.frozen
class AuthState:
    """The whole auth state at one point of the log."""

    enabled: bool = False
    revision: int = 1
    users: dict[str, User] = attrs.field(factory=dict)
    roles: dict[str, Role] = attrs.field(factory=dict)

    def grants(self, user: str) -> Grants | None:
        """What user may do; None if there is no such user."""
        found = self.users.get(user)
        if found is None:
            return None
        return Grants.of(found.roles, self.roles)

    def is_root(self, user: str) -> bool:
        found = self.users.get(user)
        return found is not None and ROOT in found.roles


def load(tables: Tables) -> AuthState:
    users = {k.decode("utf-8", "replace"): User.FromString(v) for k, v in tables.scan(USERS)}
    roles = {k.decode("utf-8", "replace"): Role.FromString(v) for k, v in tables.scan(ROLES)}
    return AuthState(_enabled(tables), _revision(tables), users, roles)


def _enabled(tables: Tables) -> bool:
    return tables.get(META, ENABLED) == b"\x01"


def _revision(tables: Tables) -> int:
    data = tables.get(META, REVISION)
    return 1 if data is None else int(_I64.unpack(data)[0])


class AuthStore:
    """etcd's Auth writes over writable tables. Each method returns the
    response message (header left for the API layer) or raises the
    ``EtcdError`` etcd answers with, before writing anything."""

    def __init__(self, tables: WritableTables) -> None:
        self._tables = tables

    def apply(self, field: str, request: Any) -> Any:
        """The write carried in Command field ``field`` (one of ``COMMAND_FIELDS``)."""
        return getattr(self, "_" + field)(request)

    # -- reads --------------------------------------------------------------------

    def _user(self, name: str) -> User | None:
        data = self._tables.get(USERS, name.encode())
        return None if data is None else User.FromString(data)

    def _role(self, name: str) -> Role | None:
        data = self._tables.get(ROLES, name.encode())
        return None if data is None else Role.FromString(data)

    # -- writes -------------------------------------------------------------------

    def _changed(self) -> None:
        self._tables.put(META, REVISION, _I64.pack(_revision(self._tables) + 1))

    def _put_user(self, user: User) -> None:
        self._tables.put(USERS, user.name, user.SerializeToString(deterministic=True))
        self._changed()

    def _put_role(self, role: Role) -> None:
        self._tables.put(ROLES, role.name, role.SerializeToString(deterministic=True))
        self._changed()

    def _auth_enable(self, request: pb.AuthEnableRequest) -> pb.AuthEnableResponse:
        if not _enabled(self._tables):
            root = self._user(ROOT)
            if root is None:
                raise errors.RootUserNotExist()
            if ROOT not in root.roles:
                raise errors.RootRoleNotExist()
            self._tables.put(META, ENABLED, b"\x01")
            self._changed()
        return pb.AuthEnableResponse()

    def _auth_disable(self, request: pb.AuthDisableRequest) -> pb.AuthDisableResponse:
        if _enabled(self._tables):
            self._tables.delete(META, ENABLED)
            self._changed()
        return pb.AuthDisableResponse()

    def _user_add(self, request: pb.AuthUserAddRequest) -> pb.AuthUserAddResponse:
        if not request.name:
            raise errors.UserEmpty()
        if self._user(request.name) is not None:
            raise errors.UserAlreadyExist()
        user = User(name=request.name.encode(), password=request.hashedPassword.encode())
        if request.options.no_password:
            user.options.no_password = True
            user.password = b""
        self._put_user(user)
        return pb.AuthUserAddResponse()

    def _user_delete(self, request: pb.AuthUserDeleteRequest) -> pb.AuthUserDeleteResponse:
        if _enabled(self._tables) and request.name == ROOT:
            raise errors.InvalidAuthMgmt()
        if self._user(request.name) is None:
            raise errors.UserNotFound()
        self._tables.delete(USERS, request.name.encode())
        self._changed()
        return pb.AuthUserDeleteResponse()

    def _user_change_password(self, request: pb.AuthUserChangePasswordRequest) -> pb.AuthUserChangePasswordResponse:
        user = self._user(request.name)
        if user is None:
            raise errors.UserNotFound()
        user.password = request.hashedPassword.encode()
        self._put_user(user)
        return pb.AuthUserChangePasswordResponse()

    def _user_grant_role(self, request: pb.AuthUserGrantRoleRequest) -> pb.AuthUserGrantRoleResponse:
        user = self._user(request.user)
        if user is None:
            raise errors.UserNotFound()
        if request.role != ROOT and self._role(request.role) is None:
            raise errors.RoleNotFound()
        if request.role not in user.roles:
            roles = sorted([*user.roles, request.role])
            del user.roles[:]
            user.roles.extend(roles)
            self._put_user(user)
        return pb.AuthUserGrantRoleResponse()

    def _user_revoke_role(self, request: pb.AuthUserRevokeRoleRequest) -> pb.AuthUserRevokeRoleResponse:
        if _enabled(self._tables) and request.name == ROOT and request.role == ROOT:
            raise errors.InvalidAuthMgmt()
        user = self._user(request.name)
        if user is None:
            raise errors.UserNotFound()
        if request.role not in user.roles:
            raise errors.RoleNotGranted()
        user.roles.remove(request.role)
        self._put_user(user)
        return pb.AuthUserRevokeRoleResponse()

    def _role_add(self, request: pb.AuthRoleAddRequest) -> pb.AuthRoleAddResponse:
        if not request.name:
            raise errors.RoleEmpty()
        if self._role(request.name) is not None:
            raise errors.RoleAlreadyExist()
        self._put_role(Role(name=request.name.encode()))
        return pb.AuthRoleAddResponse()

    def _role_delete(self, request: pb.AuthRoleDeleteRequest) -> pb.AuthRoleDeleteResponse:
        if _enabled(self._tables) and request.role == ROOT:
            raise errors.InvalidAuthMgmt()
        if self._role(request.role) is None:
            raise errors.RoleNotFound()
        self._tables.delete(ROLES, request.role.encode())
        for name, data in list(self._tables.scan(USERS)):  # etcd: the role leaves every user
            user = User.FromString(data)
            if request.role in user.roles:
                user.roles.remove(request.role)
                self._tables.put(USERS, name, user.SerializeToString(deterministic=True))
        self._changed()
        return pb.AuthRoleDeleteResponse()

    def _role_grant_permission(self, request: pb.AuthRoleGrantPermissionRequest) -> pb.AuthRoleGrantPermissionResponse:
        role = self._role(request.name)
        if role is None:
            raise errors.RoleNotFound()
        perm = request.perm
        for existing in role.keyPermission:
            if existing.key == perm.key and existing.range_end == perm.range_end:
                existing.permType = perm.permType
                break
        else:
            index = next((i for i, p in enumerate(role.keyPermission) if p.key >= perm.key), len(role.keyPermission))
            perms = list(role.keyPermission)
            perms.insert(index, Permission(permType=perm.permType, key=perm.key, range_end=perm.range_end))
            del role.keyPermission[:]
            role.keyPermission.extend(perms)
        self._put_role(role)
        return pb.AuthRoleGrantPermissionResponse()

    def _role_revoke_permission(
        self, request: pb.AuthRoleRevokePermissionRequest
    ) -> pb.AuthRoleRevokePermissionResponse:
        role = self._role(request.role)
        if role is None:
            raise errors.RoleNotFound()
        kept = [p for p in role.keyPermission if not (p.key == request.key and p.range_end == request.range_end)]
        if len(kept) == len(role.keyPermission):
            raise errors.PermissionNotGranted()
        del role.keyPermission[:]
        role.keyPermission.extend(kept)
        self._put_role(role)
        return pb.AuthRoleRevokePermissionResponse()
