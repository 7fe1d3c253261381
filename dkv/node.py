# test-case-name: tests.test_rest
"""The node as the API layers see it: dkv's own put, get, delete, status and
membership, and etcd's KV (range, the writes, hash).

Every API calls only this. It validates what every API must validate (key and
value sizes, etcd's request checks), encodes commands, and asks the
replication service for writes and linearizable read barriers. ``/v0`` writes
are etcd Puts and DeleteRanges on the same keyspace, so they move the
revision too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, execute, fail, succeed

from dkv.alarms import KNOWN_ALARMS, txn_puts
from dkv.auth import permissions
from dkv.auth.node_auth import NodeAuth, v0_error
from dkv.commands import Idempotency, WriteRequest, encode, encode_delete, encode_put
from dkv.config import ConfigError, Limits, host_port, parse_address
from dkv.errors import DkvError, InvalidArgument, KeyNotFound, NoLeader, TooLarge
from dkv.errors import NoSpace as V0NoSpace
from dkv.ids import cluster_number, member_id
from dkv.metrics import NodeMetrics
from dkv.mvcc import check_delete_range, check_put, check_range, check_txn
from dkv.mvcc.errors import EmptyKey, EtcdError, NoSpace, RequestTooLarge
from dkv.node_leases import NodeLeases
from dkv.pb import kv_pb2
from dkv.pb.etcd_rpc_pb2 import (
    AlarmRequest,
    AlarmResponse,
    DeleteRangeRequest,
    HashKVResponse,
    PutRequest,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    TxnRequest,
)
from dkv.quota import Quota
from dkv.raft import NotLeader
from dkv.raft.membership import NODE_ID, Member, Membership
from dkv.replication import ReplicationService
from dkv.request_counts import RequestCounts
from dkv.storage import NodeStore

if TYPE_CHECKING:
    from dkv.transport.cluster_client import ClusterClient

#: etcd's cancel_reason for a watch its user may not read (the gRPC status as Go prints it).
WATCH_DENIED = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


@attrs.define
class Node:
    replication: ReplicationService
    store: NodeStore
    limits: Limits = Limits()
    #: Calls other nodes' Cluster service (forwarding to the leader).
    cluster: ClusterClient | None = None
    #: Where to dial a member (its configured address, or a route).
    address_of: Callable[[str], str | None] = lambda node_id: None
    #: etcd's Lease service (``dkv.node_leases``), with the leader's lessor.
    #: One per node: ``keyed`` copies pass it on (building one registers
    #: replication listeners and starts a lessor).
    leases: NodeLeases = attrs.field(
        default=attrs.Factory(lambda self: NodeLeases(self.replication, self.cluster, self.address_of), takes_self=True)
    )
    #: The scheme of members' URLs in etcd's MemberList: "https" when the
    #: RPC port serves TLS (``dkv.tls``).
    url_scheme: str = "http"

    #: Authentication and authorization (``dkv.auth.node_auth``). One per
    #: node, like ``leases``.
    auth: NodeAuth = attrs.field(
        default=attrs.Factory(lambda self: NodeAuth(self.replication, self.limits.auth_token_ttl), takes_self=True)
    )
    #: This node's metrics (``dkv.metrics``): the API layers count requests
    #: in it, ``GET /metrics`` renders it.
    metrics: NodeMetrics = attrs.field(factory=NodeMetrics)

    #: The space quota and the NOSPACE alarm (``dkv.quota``). One per node.
    quota: Quota = attrs.field(
        default=attrs.Factory(
            lambda self: Quota(
                self.replication, self.store.size, member_id(self.replication.node_id), self.limits.quota_backend_bytes
            ),
            takes_self=True,
        )
    )

    #: Reads this node answered (shared with its ``keyed`` copies).
    counts: RequestCounts = attrs.field(factory=RequestCounts)

    #: The client's idempotency key for the writes of this request (see
    #: ``keyed``); None: writes are not remembered.
    idempotency_key: bytes | None = None
    #: The auth token the client sent with this request (see ``with_token``).
    token: str | None = None

    def with_token(self, token: str | None) -> Node:
        """This node for one request that came with an auth token (gRPC
        metadata ``token``, REST header ``Authorization``): every check of
        ``self.auth`` is made for the user it names. The API layers call it;
        the token is looked at only if auth is enabled and the request needs
        a check."""
        if not token:
            return self
        return attrs.evolve(self, token=token)

    def token_ready(self) -> Deferred[None] | None:
        """None, or a Deferred to wait on before this request's token is
        looked at: its Authenticate went through another member a moment ago
        and this one has not applied it yet (``NodeAuth.token_ready``). The
        API layers wait on it, whatever it fires with, before the handler."""
        if self.token is None:
            return None
        d = self.auth.token_ready(self.token)
        return None if d is None else d.addErrback(lambda _: None)

    def authorize(self, needs: Iterable[permissions.Need]) -> None:
        """Raise etcd's error unless this request's user may touch every
        (access, key, range_end) in needs (a no-op while auth is disabled)."""
        self.auth.check(self.token, needs)

    def authorize_root(self) -> None:
        self.auth.check_root(self.token)

    def authorize_user(self) -> None:
        self.auth.check_user(self.token)

    def watch_refusal(self, key: bytes, range_end: bytes) -> str | None:
        """Why a watch of (key, range_end) is refused to this request's
        user, as etcd's cancel_reason says it; None if it is allowed."""
        try:
            self.authorize([(permissions.Access.READ, key, range_end)])
        except (EtcdError, DkvError):  # DkvError: the node is stopping
            return WATCH_DENIED
        return None

    def keyed(self, key: bytes | None) -> Node:
        """This node for one request whose client sent an idempotency key:
        every write it proposes carries the key (``dkv.idempotency``), and a
        retry with the same key and request is answered with the first
        outcome. The API layers call it (key from ``parse_key``); handlers
        see a node like any other."""
        if key is None or self.limits.idempotency_window <= 0:
            return self
        return attrs.evolve(self, idempotency_key=key)

    @property
    def idempotency(self) -> Idempotency | None:
        """What a command proposed for this request must carry, if anything."""
        if self.idempotency_key is None:
            return None
        return Idempotency(self.idempotency_key, self.limits.idempotency_window)

    def check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidArgument("key must not be empty")
        if len(key) > self.limits.max_key_bytes:
            raise TooLarge(f"key is {len(key)} bytes; the limit is {self.limits.max_key_bytes}")

    def check_write_admission(self) -> None:
        """Raise Overloaded if admission control refuses client writes now
        (``ReplicationService.check_write_admission``): lets the REST front
        door refuse a write before it parses the body."""
        self.replication.check_write_admission()

    def put(self, key: bytes, value: bytes, *, admitted: bool = False) -> Deferred[Any]:
        """Fires (with etcd's PutResponse) once the write is committed and
        applied on this node. admitted: the caller checked write admission
        just now, in this call (``ReplicationService.propose``)."""
        try:
            self.check_key(key)
            if len(value) > self.limits.max_body_bytes:
                raise TooLarge(f"value is {len(value)} bytes; the limit is {self.limits.max_body_bytes}")
            self._authorize_v0(permissions.Access.WRITE, key)
            self.quota.check(len(key) + len(value))
        except DkvError as e:
            return fail(e)
        except NoSpace:
            return fail(V0NoSpace())
        rid = self.replication.next_request_id()
        d = self.replication.propose(rid, encode_put(rid, key, value, self.idempotency), admitted=admitted)
        return d.addErrback(_v0_no_space)

    def delete(self, key: bytes) -> Deferred[Any]:
        try:
            self.check_key(key)
            self._authorize_v0(permissions.Access.WRITE, key)
        except DkvError as e:
            return fail(e)
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode_delete(rid, key, self.idempotency))

    def get(self, key: bytes, linearizable: bool = True) -> Deferred[bytes]:
        """The value of key; KeyNotFound if absent. A linearizable read waits
        for a ReadIndex barrier; a serializable one reads local state now."""
        try:
            self.check_key(key)
            self._authorize_v0(permissions.Access.READ, key)
        except DkvError as e:
            return fail(e)
        if not linearizable:
            return execute(self._value, key)
        # The callback answers the value itself (no Deferred to chain).
        return self.replication.read_barrier().addCallback(lambda _: self._value(key))

    def _authorize_v0(self, access: permissions.Access, key: bytes) -> None:
        """``authorize`` for dkv's own API: its errors as 401 / 403."""
        try:
            self.authorize([(access, key, b"")])
        except EtcdError as e:
            raise v0_error(e) from None

    def _value(self, key: bytes) -> bytes:
        """The applied value of key, counted as a read; raises KeyNotFound
        if absent, NoLeader once the node is stopping."""
        value = self.replication.read(key)
        self.counts.read()
        if value is None:
            raise KeyNotFound()
        return value

    # -- etcd's KV ---------------------------------------------------------------

    def member_id(self) -> int:
        return member_id(self.replication.node_id)

    def cluster_number(self) -> int:
        return cluster_number(self.replication.cluster_id)

    def fill_header(self, header: ResponseHeader) -> None:
        """etcd's header.fill: who answers, in which term; the revision is the
        store's (a write's, or the state's at a read), left as it is if set."""
        header.cluster_id = self.cluster_number()
        header.member_id = self.member_id()
        header.raft_term = self.raft_term()

    def range(self, request: RangeRequest) -> Deferred[RangeResponse]:
        """etcd's Range: linearizable (a ReadIndex barrier first) unless
        ``request.serializable``. Fails with an EtcdError (EmptyKey,
        Compacted, FutureRevision) or NoLeader."""
        try:
            check_range(request)
            self.authorize(permissions.range_needs(request))
        except (EtcdError, DkvError) as e:
            return fail(e)
        if request.serializable:
            return execute(self._range_now, request)
        # The callback answers the response itself (no Deferred to chain).
        return self.replication.read_barrier().addCallback(lambda _: self._range_now(request))

    def range_key(self, key: bytes, *, serializable: bool = False) -> Deferred[tuple[int, bytes | None]]:
        """``range`` of ``RangeRequest(key=key, serializable=serializable)``
        without its messages (the hot read of etcd's gateway): fires with
        the store's revision and the key's KeyValue, encoded (None: the key
        has none). Fails as ``range`` does."""
        try:
            if not key:
                raise EmptyKey()
            self.authorize(((permissions.Access.READ, key, b""),))
        except (EtcdError, DkvError) as e:
            return fail(e)
        if serializable:
            return execute(self._key_now, key)
        return self.replication.read_barrier().addCallback(lambda _: self._key_now(key))

    def _key_now(self, key: bytes) -> tuple[int, bytes | None]:
        """The store's revision and key's KeyValue record now, counted as a
        read (``_range_now``'s one-key answer)."""
        with self.replication.view() as state:
            found = state.revision, state.record(key)
        self.counts.read()
        return found

    def raft_term(self) -> int:
        """The term a response's header names (0 before the core exists)."""
        raft = self.replication.raft
        return raft.term if raft is not None else 0

    def _range_now(self, request: RangeRequest) -> RangeResponse:
        """request answered from the applied state now, counted as a read;
        raises Compacted or FutureRevision (EtcdError), or NoLeader once
        the node is stopping."""
        with self.replication.view() as state:
            response = state.range(request)
        self.counts.read()
        self.fill_header(response.header)
        return response

    def write(self, request: WriteRequest) -> Deferred[Any]:
        """Propose etcd's Put, DeleteRange, Txn or Compaction; fires with its
        response once committed and applied here, or fails with the
        EtcdError the store refused it with (on every node alike), or
        NoLeader / OutcomeUnknown. etcd's request checks run first, so a
        malformed request never reaches the log."""
        try:
            self._check_write(request)
        except (EtcdError, DkvError) as e:
            return fail(e)
        rid = self.replication.next_request_id()
        d = self.replication.propose(rid, encode(rid, request, self.idempotency))
        return d.addCallback(self._filled)

    def _filled(self, response: Any) -> Any:
        self.fill_header(response.header)
        return response

    def _check_write(self, request: WriteRequest) -> None:
        if request.ByteSize() > self.limits.max_body_bytes:
            raise RequestTooLarge()
        if isinstance(request, PutRequest):
            check_put(request)
            self._check_size(request.key)
            self.authorize(permissions.put_needs(request))
        elif isinstance(request, DeleteRangeRequest):
            check_delete_range(request)
            self._check_size(request.key)
            self.authorize(permissions.delete_needs(request))
        elif isinstance(request, TxnRequest):
            check_txn(request, max_txn_ops=self.limits.max_txn_ops)
            self.authorize(permissions.txn_needs(request))
        if isinstance(request, PutRequest) or (isinstance(request, TxnRequest) and txn_puts(request)):
            self.quota.check(request.ByteSize())

    def _check_size(self, key: bytes) -> None:
        if len(key) > self.limits.max_key_bytes:
            raise TooLarge(f"key is {len(key)} bytes; the limit is {self.limits.max_key_bytes}")

    def alarm(self, request: AlarmRequest) -> Deferred[AlarmResponse]:
        """etcd's Alarm: GET lists the alarms of this node's applied state;
        ACTIVATE and DEACTIVATE go through the log (every member applies
        them) and fire with etcd's answer once applied here."""
        if request.action not in (AlarmRequest.GET, AlarmRequest.ACTIVATE, AlarmRequest.DEACTIVATE):
            return fail(InvalidArgument(f"unknown alarm action {request.action}"))
        if request.alarm != 0 and request.alarm not in KNOWN_ALARMS:  # 0: NONE
            return fail(InvalidArgument(f"unknown alarm type {request.alarm}"))
        if request.action == AlarmRequest.GET:
            response = AlarmResponse()
            response.alarms.extend(
                a for a in self.quota.alarms() if request.memberID in (0, a.memberID) and request.alarm in (0, a.alarm)
            )
            self.fill_header(response.header)
            return succeed(response)
        return self.quota.propose(request).addCallback(self._filled)

    def hash_kv(self, revision: int = 0) -> HashKVResponse:
        """etcd's HashKV of this node's applied state (a serializable read:
        each member answers for itself, so members can be compared)."""
        with self.replication.view() as state:
            digest, compacted = state.hash_kv(revision)
            response = HashKVResponse(hash=digest, compact_revision=compacted)
            response.header.revision = state.revision
        self.fill_header(response.header)
        return response

    def store_size(self) -> tuple[int, int]:
        """(bytes of the db on disk, bytes in use)."""
        return self.store.size()

    def store_copy(self, fd: int) -> None:
        """A consistent copy of the whole db to fd (blocking: off the reactor)."""
        self.store.copy(fd)

    def revision(self) -> int:
        """The revision of this node's applied state."""
        with self.replication.view() as state:
            return state.revision

    # -- membership ------------------------------------------------------------

    def members(self) -> dict[str, Any]:
        """This node's view of the latest configuration."""
        st = self.replication.status()
        return _members_view(st.membership, st.leader or "", self.replication.cluster_id)

    def add_member(self, node_id: str, address: str, learner: bool, forward: bool = True) -> Deferred[dict[str, Any]]:
        try:
            if not NODE_ID.match(node_id):
                raise InvalidArgument(f"member id {node_id!r}: use letters, digits, '_', '.', '-' (max 64)")
            try:
                host, port = parse_address(address, "address")
            except ConfigError as e:
                raise InvalidArgument(str(e)) from None
        except InvalidArgument as e:
            return fail(e)
        member = Member(node_id, host_port(host, port), not learner)
        return self._on_leader(
            lambda r: r.add_member(member),
            "AddMember",
            kv_pb2.AddMemberRequest(id=node_id, address=member.address, learner=learner),
            forward,
        )

    def promote_member(self, node_id: str, forward: bool = True) -> Deferred[dict[str, Any]]:
        return self._on_leader(
            lambda r: r.promote_member(node_id), "PromoteMember", kv_pb2.PromoteMemberRequest(id=node_id), forward
        )

    def remove_member(self, node_id: str, forward: bool = True) -> Deferred[dict[str, Any]]:
        return self._on_leader(
            lambda r: r.remove_member(node_id), "RemoveMember", kv_pb2.RemoveMemberRequest(id=node_id), forward
        )

    def transfer_leader(self, to: str | None, forward: bool = True) -> Deferred[dict[str, Any]]:
        def local(r: ReplicationService) -> Deferred[dict[str, Any]]:
            return r.transfer_leadership(to).addCallback(lambda leader: {"leader_id": leader})

        def remote(response: Any) -> dict[str, Any]:
            return {"leader_id": response.leader_id}

        return self._on_leader(
            local, "TransferLeader", kv_pb2.TransferLeaderRequest(to=to or ""), forward, remote
        )

    def _on_leader(
        self,
        local: Callable[[ReplicationService], Deferred[Any]],
        method: str,
        request: Any,
        forward: bool,
        from_response: Callable[[Any], dict[str, Any]] | None = None,
        waited: bool = False,
    ) -> Deferred[dict[str, Any]]:
        """Run local on the leader; from a follower, forward the request to
        the leader's Cluster service (once: a forwarded request is never
        forwarded again). While this node knows no leader (an election) the
        request waits for one, once, up to the request timeout, as writes
        do. The API layers check the caller's permission
        (``authorize_root``) before they call: the node's own calls (a
        learner promoting itself) need none."""
        try:
            d = local(self.replication)
        except NotLeader as e:
            if e.leader is None and forward and not waited:
                return self.replication.leader_known().addCallback(
                    lambda _: self._on_leader(local, method, request, forward, from_response, waited=True)
                )
            address = self.address_of(e.leader) if e.leader else None
            if not forward or address is None or self.cluster is None:
                return fail(NoLeader())
            d = self.cluster.call(address, method, request)
            return d.addCallback(from_response or _members_from_pb)
        except DkvError as e:
            return fail(e)
        if from_response is None:
            d.addCallback(
                lambda m: _members_view(m, self.replication.status().leader or "", self.replication.cluster_id)
            )
        return d

    def status(self) -> dict[str, Any]:
        st = self.replication.status()
        return {
            "id": st.id,
            "role": st.role.value,
            "term": st.term,
            "leader_id": st.leader or "",
            "commit_index": st.commit,
            "applied_index": self.replication.applied,
            "stored_index": self.replication.stored_applied,
            "last_index": st.last_index,
            "first_index": st.first_index,
            "snapshot_index": st.snapshot_index,
            "members": [
                {
                    "id": m.id,
                    "address": m.address,
                    "voter": m.voter,
                    "match_index": st.match.get(m.id, 0),
                }
                for m in st.membership.members
            ],
        }


def _v0_no_space(failure: Any) -> Any:
    """etcd's NoSpace (the alarm refused the write at apply) as /v0 says it."""
    if isinstance(failure.value, NoSpace):
        raise V0NoSpace()
    return failure


def _members_view(membership: Membership, leader: str, cluster_id: str) -> dict[str, Any]:
    return {
        "members": [{"id": m.id, "address": m.address, "voter": m.voter} for m in membership.members],
        "leader_id": leader,
        "cluster_id": cluster_id,
    }


def _members_from_pb(response: Any) -> dict[str, Any]:
    return {
        "members": [{"id": m.id, "address": m.address, "voter": m.voter} for m in response.members],
        "leader_id": response.leader_id,
        "cluster_id": response.cluster_id,
    }
