# test-case-name: tests.auth.test_node_auth
"""Authentication and authorization on one node.

The API layers hand the node the caller's token as they received it (gRPC
metadata ``token``, REST header ``Authorization``: ``dkv.node.Node.with_token``)
and the node asks ``NodeAuth`` before it serves: ``check`` (the keys a
request needs, ``dkv.auth.permissions``), ``check_root`` (membership,
maintenance, auth management) or ``check_user`` (leases, compaction). While
auth is disabled every check passes and tokens are not even looked at. When
it is enabled:

- no token: ``etcdserver: user name is empty`` (etcd's answer);
- a token this node did not issue, expired, of a deleted user or issued
  before the password changed: ``etcdserver: invalid auth token``;
- a user whose roles do not cover the request: ``etcdserver: permission
  denied``; a user with the ``root`` role may do anything.

The Auth RPCs: writes go through the log (``dkv.auth.store``); a UserAdd or
UserChangePassword is hashed here first, off the reactor thread, so the
plaintext never enters the log. Reads (UserGet, RoleList, ...) and
Authenticate read the applied state after a ReadIndex barrier, so they see
every write acknowledged before them. The auth state is cached here and
dropped whenever an applied batch changed it or a snapshot was installed.

``failures`` counts refusals by reason (``authenticate``, ``no_user``,
``bad_token``, ``denied``) for the metrics.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread

from dkv.auth import passwords
from dkv.auth.permissions import ROOT, Access, Need
from dkv.auth.store import AuthState, load
from dkv.auth.tokens import DEFAULT_TTL, SimpleTokens, issued_at
from dkv.commands import AuthRequest, encode
from dkv.errors import BY_GRPC_CODE, DkvError, NoSpace, Overloaded, PermissionDenied, Unauthenticated
from dkv.logs import logger
from dkv.mvcc import errors
from dkv.mvcc.errors import Code, EtcdError
from dkv.pb import etcd_rpc_pb2 as pb
from dkv.pb.raft_pb2 import IssuedToken

if TYPE_CHECKING:
    from dkv.replication import ReplicationService
    from dkv.statemachine import Outcome

log = logger("dkv.auth")


class HashedPasswordRefused(EtcdError):
    """A client sent ``hashedPassword`` (etcd 3.5's bcrypt): dkv keeps scrypt
    hashes it makes itself."""

    code = Code.INVALID_ARGUMENT
    message = "etcdserver: dkv does not take hashedPassword: send the password (it is hashed with scrypt)"


#: A token that names an entry further ahead of this node's applied index
#: than this is not waited for (a made-up token; or this node is far behind,
#: and the client authenticates again elsewhere).
_MAX_TOKEN_WAIT_ENTRIES = 100_000


@attrs.define
class NodeAuth:
    replication: ReplicationService
    token_ttl: float = DEFAULT_TTL
    tokens: SimpleTokens = attrs.field(init=False)
    failures: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _state: AuthState | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.tokens = SimpleTokens(self.replication.clock, self.token_ttl)
        self.replication.apply_listeners.append(self._applied)
        self.replication.install_listeners.append(self._forget)

    # -- the cached state ---------------------------------------------------------------

    def state(self) -> AuthState:
        """The applied auth state. Raises NoLeader once the node stops."""
        if self._state is None:
            with self.replication.view() as view:
                self._state = load(view.tables)
            if not self._state.enabled:
                self.tokens.clear()  # etcd forgets every token when auth is disabled
        return self._state

    @property
    def enabled(self) -> bool:
        return self.state().enabled

    def _applied(self, outcome: Outcome) -> None:
        if outcome.auth_changed:
            self._forget()
        for issued in outcome.tokens_issued:
            self.tokens.register(issued.token, issued.name, issued.password_hash)

    def token_ready(self, token: str | None) -> Deferred[None] | None:
        """None if token can be looked up now; else a Deferred that fires
        once this node has applied the entry that issued it (a token issued
        through another member a moment ago), or fails after the request
        timeout (the lookup then says ``invalid auth token``)."""
        if not token or token in self.tokens or not self.enabled:
            return None
        index = issued_at(token)
        applied = self.replication.applied
        if index is None or index <= applied or index > applied + _MAX_TOKEN_WAIT_ENTRIES:
            return None
        return self.replication.wait_applied(index)

    def _forget(self) -> None:
        self._state = None

    # -- checks -----------------------------------------------------------------------------

    def user_of(self, token: str | None) -> str | None:
        """The user token names (None while auth is disabled). Raises
        UserEmpty without a token, InvalidAuthToken for a bad one."""
        state = self.state()
        if not state.enabled:
            return None
        return self._user(state, token)

    def _user(self, state: AuthState, token: str | None) -> str:
        if not token:
            self.failures["no_user"] += 1
            raise errors.UserEmpty()
        found = self.tokens.lookup(token)
        user = state.users.get(found[0]) if found is not None else None
        if found is None or user is None or user.password != found[1]:
            if found is not None:
                self.tokens.revoke(token)
            self.failures["bad_token"] += 1
            raise errors.InvalidAuthToken()
        return found[0]

    def check(self, token: str | None, needs: Iterable[Need]) -> None:
        """Raise unless the caller may touch every (access, key, range_end)."""
        state = self.state()
        if not state.enabled:
            return
        user = self._user(state, token)
        grants = state.grants(user)
        if grants is None or not grants.allows_all(needs):
            self._denied()

    def check_root(self, token: str | None) -> None:
        state = self.state()
        if state.enabled and not state.is_root(self._user(state, token)):
            self._denied()

    def check_user(self, token: str | None) -> None:
        self.user_of(token)

    def _denied(self) -> None:
        self.failures["denied"] += 1
        raise errors.PermissionDenied()

    # -- Authenticate ---------------------------------------------------------------------

    def authenticate(self, request: pb.AuthenticateRequest) -> Deferred[pb.AuthenticateResponse]:
        """A token for a user whose password matches, valid on every member
        once the entry that issues it is applied (the answer waits for it
        here); AuthFailed otherwise
        (an unknown user too: the answer does not tell which),
        AuthNotEnabled while auth is disabled (etcd's answers)."""

        def verify(_: object) -> Deferred[pb.AuthenticateResponse]:
            state = self.state()
            if not state.enabled:
                return fail(errors.AuthNotEnabled())
            user = state.users.get(request.name)
            stored = user.password.decode("ascii", "replace") if user is not None else ""
            if user is None or user.options.no_password or not stored:
                return fail(self._auth_failed())
            d = deferToThread(passwords.verify_password, request.password, stored)
            return d.addCallback(issue, user.password)

        def issue(ok: bool, password_hash: bytes) -> Deferred[pb.AuthenticateResponse]:
            if not ok:
                raise self._auth_failed()
            # Through the log, so that every member knows the token (etcd's way).
            issued = IssuedToken(name=request.name, token=self.tokens.new_prefix(), password_hash=password_hash)
            return self._propose(issued)

        return self.replication.read_barrier().addCallback(verify)

    def _auth_failed(self) -> EtcdError:
        self.failures["authenticate"] += 1
        log.info("authentication failed")  # never the name or password: a typo may be a password
        return errors.AuthFailed()

    # -- auth management --------------------------------------------------------------------

    def write(self, token: str | None, request: AuthRequest) -> Deferred[Any]:
        """Propose an Auth write (root only while auth is enabled, except a
        user changing its own password); fires with its response once
        applied here, or fails with the EtcdError etcd answers with."""
        try:
            if isinstance(request, pb.AuthUserChangePasswordRequest):
                self._check_self_or_root(token, request.name)
            else:
                self.check_root(token)
        except EtcdError as e:
            return fail(e)
        if isinstance(request, (pb.AuthUserAddRequest, pb.AuthUserChangePasswordRequest)):
            if request.hashedPassword:
                return fail(HashedPasswordRefused())
            if isinstance(request, pb.AuthUserAddRequest) and not request.name:
                return fail(errors.UserEmpty())
            if isinstance(request, pb.AuthUserAddRequest) and request.options.no_password:
                return self._propose(_without_password(request, ""))
            return deferToThread(passwords.hash_password, request.password).addCallback(
                lambda hashed: self._propose(_without_password(request, hashed))
            )
        return self._propose(request)

    def _propose(self, request: AuthRequest) -> Deferred[Any]:
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode(rid, request))

    def _check_self_or_root(self, token: str | None, name: str) -> None:
        state = self.state()
        if not state.enabled:
            return
        user = self._user(state, token)
        if user != name and not state.is_root(user):
            self._denied()

    def read(self, token: str | None, request: Any) -> Deferred[Any]:
        """UserGet, UserList, RoleGet, RoleList, AuthStatus from the applied
        state after a ReadIndex barrier. Root only while auth is enabled,
        except a user reading itself or one of its roles, and AuthStatus
        (any user), as etcd."""

        def answer(_: object) -> Any:
            state = self.state()
            if state.enabled:
                user = self._user(state, token)
                if not state.is_root(user) and not _own(state, user, request):
                    self._denied()
            return _read(state, request)

        return self.replication.read_barrier().addCallback(answer)


def v0_error(error: EtcdError) -> DkvError:
    """etcd's error as dkv's own API answers it: no or a bad token is 401,
    a refusal 403, no space 507 and too many requests 429 (both share
    RESOURCE_EXHAUSTED with 413), anything else by its gRPC code (the
    reason without etcd's ``etcdserver:`` prefix)."""
    if isinstance(error, errors.UserEmpty):
        return Unauthenticated("authentication required: send a token in the Authorization header")
    if isinstance(error, errors.InvalidAuthToken):
        return Unauthenticated("invalid auth token")
    if isinstance(error, errors.PermissionDenied):
        return PermissionDenied()
    if isinstance(error, errors.NoSpace):
        return NoSpace()
    reason = error.message.removeprefix("etcdserver: ")
    if isinstance(error, errors.TooManyRequests):
        return Overloaded(reason)
    return BY_GRPC_CODE.get(int(error.code), DkvError)(reason)


def _own(state: AuthState, user: str, request: Any) -> bool:
    if isinstance(request, pb.AuthStatusRequest):
        return True
    if isinstance(request, pb.AuthUserGetRequest):
        return request.name == user
    if isinstance(request, pb.AuthRoleGetRequest):
        return request.role in state.users[user].roles
    return False


def _read(state: AuthState, request: Any) -> Any:
    if isinstance(request, pb.AuthStatusRequest):
        return pb.AuthStatusResponse(enabled=state.enabled, authRevision=state.revision)
    if isinstance(request, pb.AuthUserGetRequest):
        user = state.users.get(request.name)
        if user is None:
            raise errors.UserNotFound()
        return pb.AuthUserGetResponse(roles=list(user.roles))
    if isinstance(request, pb.AuthUserListRequest):
        return pb.AuthUserListResponse(users=sorted(state.users))
    if isinstance(request, pb.AuthRoleGetRequest):
        role = state.roles.get(request.role)
        if role is None:
            raise errors.RoleNotFound()
        return pb.AuthRoleGetResponse(perm=list(role.keyPermission))
    if isinstance(request, pb.AuthRoleListRequest):
        return pb.AuthRoleListResponse(roles=sorted(state.roles))
    raise TypeError(f"not an auth read: {type(request).__name__}")


def _without_password(request: Any, hashed: str) -> Any:
    """A copy of request carrying the hash instead of the password."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.password = ""
    copy.hashedPassword = hashed
    return copy


__all__ = ["ROOT", "Access", "NodeAuth"]
