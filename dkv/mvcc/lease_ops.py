# test-case-name: tests.mvcc.test_leases
"""etcd's lease writes as the state machine applies them: LeaseGrant and
LeaseRevoke (a revoke is also how an expiry is applied).

Both are deterministic: the grant's id and TTL arrive in the command (the
node that took the request picked an id for ID 0 and raised the TTL to the
minimum before proposing), and a revoke deletes the lease's keys in key
order, all at ONE new revision, with the usual delete events.
"""

from __future__ import annotations

from dkv.mvcc import errors
from dkv.mvcc.leases import TableLeases
from dkv.mvcc.store import MvccStore, Written
from dkv.pb.etcd_rpc_pb2 import (
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    RequestOp,
    TxnRequest,
)


def grant(store: MvccStore, leases: TableLeases, request: LeaseGrantRequest) -> LeaseGrantResponse:
    """Record the lease. Raises LeaseNotFound for ID 0 (a proposing-side
    bug: ids are picked before the log) and LeaseExists."""
    if request.ID == 0:
        raise errors.LeaseNotFound()
    leases.grant(request.ID, request.TTL)
    response = LeaseGrantResponse(ID=request.ID, TTL=request.TTL)
    response.header.revision = store.revision
    return response


def revoke(store: MvccStore, leases: TableLeases, request: LeaseRevokeRequest) -> Written[LeaseRevokeResponse]:
    """Delete every key of the lease at one new revision (none if it has no
    keys), then the lease. Raises LeaseNotFound."""
    if not leases.exists(request.ID):
        raise errors.LeaseNotFound()
    keys = leases.keys(request.ID)
    events: tuple = ()
    if keys:
        deletes = [RequestOp(request_delete_range=DeleteRangeRequest(key=k)) for k in keys]
        events = store.txn(TxnRequest(success=deletes)).events
    leases.forget(request.ID)
    response = LeaseRevokeResponse()
    response.header.revision = store.revision
    return Written(response, events)
