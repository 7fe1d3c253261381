# test-case-name: tests.test_etcd_api
"""etcd's JSON gateway on the REST port, as etcd 3.4 serves it.

``POST /v3/<service>/<method>`` with the request message as JSON (proto3 JSON
mapping: bytes as base64, int64 as strings, enums by name or number) answers
the response message as the gateway does (``dkv.api.etcd_json``), and a
failure as ``{"error", "message", "code"}`` with grpc-gateway's HTTP status.
Each path calls ``dkv.api.etcd_v3``'s function for its RPC, the same one the
gRPC service calls. ``routes.ROUTES`` declares the paths; ``GET /version``
answers as etcd's does (``GET /health``: ``dkv.api.probes``).

``/v3/lease/keepalive`` answers its one ``{"result": ...}`` line, as the
gateway does for that streaming RPC. ``/v3/maintenance/snapshot`` streams the
stream's messages, one ``{"result": ...}`` per line, as etcd's gateway does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred

from dkv.api import etcd_json
from dkv.api.etcd_v3 import (
    ETCD_API_VERSION,
    SERVICES,
    SNAPSHOT_CHUNK,
    answer_error,
    call,
    lease_keep_alive,
    snapshot_file,
)
from dkv.api.http_common import Call, RawAnswer, StreamAnswer, StreamSink, log
from dkv.errors import Overloaded
from dkv.idempotency import IdempotencyKeyReused
from dkv.node import Node
from dkv.pb import etcd_rpc_pb2 as pb

#: Gateway path -> (service, method), as etcd 3.4's gateway maps them.
PATHS: dict[str, tuple[str, str]] = {
    "/v3/kv/range": ("KV", "Range"),
    "/v3/kv/put": ("KV", "Put"),
    "/v3/kv/deleterange": ("KV", "DeleteRange"),
    "/v3/kv/txn": ("KV", "Txn"),
    "/v3/kv/compaction": ("KV", "Compact"),
    "/v3/cluster/member/list": ("Cluster", "MemberList"),
    "/v3/cluster/member/add": ("Cluster", "MemberAdd"),
    "/v3/cluster/member/remove": ("Cluster", "MemberRemove"),
    "/v3/cluster/member/update": ("Cluster", "MemberUpdate"),
    "/v3/cluster/member/promote": ("Cluster", "MemberPromote"),
    "/v3/maintenance/status": ("Maintenance", "Status"),
    "/v3/maintenance/hash": ("Maintenance", "Hash"),
    "/v3/maintenance/hashkv": ("Maintenance", "HashKV"),
    "/v3/maintenance/alarm": ("Maintenance", "Alarm"),
    "/v3/maintenance/defragment": ("Maintenance", "Defragment"),
    "/v3/maintenance/transfer-leadership": ("Maintenance", "MoveLeader"),
    "/v3/lease/grant": ("Lease", "LeaseGrant"),
    "/v3/lease/revoke": ("Lease", "LeaseRevoke"),
    "/v3/lease/timetolive": ("Lease", "LeaseTimeToLive"),
    "/v3/lease/leases": ("Lease", "LeaseLeases"),
    # etcd 3.4's older aliases (additional_bindings)
    "/v3/kv/lease/revoke": ("Lease", "LeaseRevoke"),
    "/v3/kv/lease/timetolive": ("Lease", "LeaseTimeToLive"),
    "/v3/kv/lease/leases": ("Lease", "LeaseLeases"),
    "/v3/auth/enable": ("Auth", "AuthEnable"),
    "/v3/auth/disable": ("Auth", "AuthDisable"),
    "/v3/auth/status": ("Auth", "AuthStatus"),  # etcd 3.5's path (3.4's gateway has none)
    "/v3/auth/authenticate": ("Auth", "Authenticate"),
    "/v3/auth/user/add": ("Auth", "UserAdd"),
    "/v3/auth/user/get": ("Auth", "UserGet"),
    "/v3/auth/user/list": ("Auth", "UserList"),
    "/v3/auth/user/delete": ("Auth", "UserDelete"),
    "/v3/auth/user/changepw": ("Auth", "UserChangePassword"),
    "/v3/auth/user/grant": ("Auth", "UserGrantRole"),
    "/v3/auth/user/revoke": ("Auth", "UserRevokeRole"),
    "/v3/auth/role/add": ("Auth", "RoleAdd"),
    "/v3/auth/role/get": ("Auth", "RoleGet"),
    "/v3/auth/role/list": ("Auth", "RoleList"),
    "/v3/auth/role/delete": ("Auth", "RoleDelete"),
    "/v3/auth/role/grant": ("Auth", "RoleGrantPermission"),
    "/v3/auth/role/revoke": ("Auth", "RoleRevokePermission"),
}
#: The paths the front door answers itself (the hot ones).
FAST_PATHS = frozenset({"/v3/kv/range", "/v3/kv/put", "/v3/kv/deleterange", "/v3/kv/txn"})
#: The fast paths whose every request is a write (a txn may only read).
WRITE_PATHS = frozenset({"/v3/kv/put", "/v3/kv/deleterange"})


def _error(path: str, error: BaseException) -> RawAnswer:
    code, message = answer_error(error)
    status, body = etcd_json.format_error(code, message)
    if isinstance(error, IdempotencyKeyReused):
        status = error.http_status  # 422, as the Idempotency-Key draft says
    if status < 500 and not isinstance(error, Overloaded):  # admission control logs those itself
        log.info("rejected POST {path}: {status} {error}", path=path, status=status, error=message)
    return RawAnswer(status, body)


def handler_for(path: str) -> Callable[[Node, Call], Any]:
    """The route handler of a gateway path."""
    service, method = PATHS[path]
    rpc, request_type = SERVICES[service][method]
    # A Put's answer is most often its header alone: written directly then.
    formatted = etcd_json.format_put_response if path == "/v3/kv/put" else etcd_json.format_response

    def handle(node: Node, request: Call) -> Deferred[RawAnswer] | RawAnswer:
        try:
            message = etcd_json.parse_request(request.body, request_type)
        except etcd_json.MalformedRequest as e:
            status, body = etcd_json.format_etcd_error(e)
            log.info("rejected POST {path}: {status} {error}", path=path, status=status, error=e.message)
            return RawAnswer(status, body)
        d = call(rpc, node, message)
        return d.addCallbacks(
            lambda response: RawAnswer(200, formatted(response)),
            lambda failure: _error(path, failure.value),
        )

    handle.__name__ = f"etcd_{service}_{method}"
    if path == "/v3/kv/range":
        return _etcd_errors(path, _range_of_key_first(path, handle))
    return _etcd_errors(path, handle)


def _range_of_key_first(path: str, general: Callable[[Node, Call], Any]) -> Callable[[Node, Call], Any]:
    """The Range handler: a Range of one key with no option (the hot read of
    clients) is answered without its request and response messages
    (``Node.range_key``), in the same words; general answers every other."""

    def handle(node: Node, request: Call) -> Deferred[RawAnswer] | RawAnswer:
        plain = etcd_json.parse_range_of_key(request.body)
        if plain is None:
            return general(node, request)
        key, serializable = plain
        return node.range_key(key, serializable=serializable).addCallbacks(
            lambda found: RawAnswer(
                200,
                etcd_json.format_range_of_key(
                    (node.cluster_number(), node.member_id(), found[0], node.raft_term()), found[1]
                ),
            ),
            lambda failure: _error(path, failure.value),
        )

    handle.__name__ = general.__name__
    return handle


def _etcd_errors(path: str, handler: Callable[[Node, Call], Any]) -> Callable[[Node, Call], Any]:
    """handler, answering a bad ``Idempotency-Key`` (``dkv.api.http_common.call_handler``)
    and a refusal before the body is read (``dkv.api.front_door``) as etcd's
    gateway answers errors."""
    handler.answer_bad_key = handler.answer_error = lambda error: _error(path, error)  # type: ignore[attr-defined]
    return handler


def _snapshot(node: Node, request: Call) -> Deferred[RawAnswer | StreamAnswer]:
    """``/v3/maintenance/snapshot``: the node's copy of its db and its
    SHA-256 (``snapshot_file``), streamed as one ``{"result": ...}`` line per
    message of ``SNAPSHOT_CHUNK`` bytes, as fast as the client reads (a db of
    any size takes one chunk of memory). The copy is unlinked once open: it
    is gone when the stream ends, the client leaves, or the answer never
    starts."""

    def stream(file: tuple[str, int]) -> StreamAnswer:
        path, size = file
        try:
            copy = open(path, "rb")  # noqa: SIM115 - closed by the stream (or, never started, by its collection)
        finally:
            os.unlink(path)
        return StreamAnswer(200, b"application/json", _snapshot_lines(node, copy, size))

    return snapshot_file(node).addCallbacks(stream, lambda f: _error("/v3/maintenance/snapshot", f.value))


def _snapshot_lines(node: Node, copy: BinaryIO, size: int) -> Callable[[StreamSink], Callable[[], None]]:
    sent = 0
    stopped = False

    def start(sink: StreamSink) -> Callable[[], None]:
        def pump(_: object = None) -> None:
            nonlocal sent
            while not stopped and sink.writable:
                chunk = copy.read(SNAPSHOT_CHUNK)  # just written: from the page cache
                if not chunk:
                    copy.close()
                    sink.finish()
                    return
                sent += len(chunk)
                message = pb.SnapshotResponse(blob=chunk, remaining_bytes=size - sent)
                node.fill_header(message.header)
                sink.write(etcd_json.format_stream_result(message))
            if not stopped:
                sink.when_writable().addCallback(pump)

        def stop() -> None:
            nonlocal stopped
            stopped = True
            copy.close()

        pump()
        return stop

    return start


def _keep_alive(node: Node, request: Call) -> Deferred[RawAnswer] | RawAnswer:
    """``/v3/lease/keepalive``: the gateway's stream of one request, so one
    ``{"result": ...}`` line (TTL absent -- 0 -- for no such lease)."""
    path = "/v3/lease/keepalive"
    try:
        message = etcd_json.parse_request(request.body, pb.LeaseKeepAliveRequest)
    except etcd_json.MalformedRequest as e:
        status, body = etcd_json.format_etcd_error(e)
        log.info("rejected POST {path}: {status} {error}", path=path, status=status, error=e.message)
        return RawAnswer(status, body)
    return call(lease_keep_alive, node, message).addCallbacks(
        lambda response: RawAnswer(200, etcd_json.format_stream_result(response)),
        lambda failure: _error(path, failure.value),
    )


snapshot = _etcd_errors("/v3/maintenance/snapshot", _snapshot)
keep_alive = _etcd_errors("/v3/lease/keepalive", _keep_alive)


def version(node: Node, request: Call) -> RawAnswer:
    """What etcd's ``GET /version`` answers: clients choose their API paths by
    it. dkv speaks etcd's 3.4 API."""
    return RawAnswer(200, b'{"etcdserver":"%s","etcdcluster":"3.4.0"}' % ETCD_API_VERSION.encode())

