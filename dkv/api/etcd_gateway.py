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
gateway does for that streaming RPC. ``/v3/maintenance/snapshot`` answers the stream's messages, one
``{"result": ...}`` per line, in one answer (the gateway streams them; a
client reads the same lines).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

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
from dkv.api.http_common import Call, RawAnswer, log
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
}
#: The paths the front door answers itself (the hot ones).
FAST_PATHS = frozenset({"/v3/kv/range", "/v3/kv/put", "/v3/kv/deleterange", "/v3/kv/txn"})


def _error(path: str, error: BaseException) -> RawAnswer:
    code, message = answer_error(error)
    status, body = etcd_json.format_error(code, message)
    if isinstance(error, IdempotencyKeyReused):
        status = error.http_status  # 422, as the Idempotency-Key draft says
    if status < 500:
        log.info("rejected POST {path}: {status} {error}", path=path, status=status, error=message)
    return RawAnswer(status, body)


def handler_for(path: str) -> Callable[[Node, Call], Any]:
    """The route handler of a gateway path."""
    service, method = PATHS[path]
    rpc, request_type = SERVICES[service][method]

    def handle(node: Node, request: Call) -> Deferred[RawAnswer] | RawAnswer:
        try:
            message = etcd_json.parse_request(request.body, request_type)
        except etcd_json.MalformedRequest as e:
            status, body = etcd_json.format_etcd_error(e)
            log.info("rejected POST {path}: {status} {error}", path=path, status=status, error=e.message)
            return RawAnswer(status, body)
        d = call(rpc, node, message)
        return d.addCallbacks(
            lambda response: RawAnswer(200, etcd_json.format_response(response)),
            lambda failure: _error(path, failure.value),
        )

    handle.__name__ = f"etcd_{service}_{method}"
    return handle


def snapshot(node: Node, request: Call) -> Deferred[RawAnswer]:
    def lines(file: tuple[str, int]) -> RawAnswer:
        path, size = file
        out, sent = [], 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(SNAPSHOT_CHUNK):
                    sent += len(chunk)
                    message = pb.SnapshotResponse(blob=chunk, remaining_bytes=size - sent)
                    node.fill_header(message.header)
                    out.append(etcd_json.format_stream_result(message))
        finally:
            os.unlink(path)
        return RawAnswer(200, b"".join(out))

    return snapshot_file(node).addCallbacks(lines, lambda f: _error("/v3/maintenance/snapshot", f.value))


def keep_alive(node: Node, request: Call) -> Deferred[RawAnswer] | RawAnswer:
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


def version(node: Node, request: Call) -> RawAnswer:
    """What etcd's ``GET /version`` answers: clients choose their API paths by
    it. dkv speaks etcd's 3.4 API."""
    return RawAnswer(200, b'{"etcdserver":"%s","etcdcluster":"3.4.0"}' % ETCD_API_VERSION.encode())

