"""etcd's error messages and gRPC codes, as etcd's rpctypes/error.go
defines them (the facts clients match on)."""

from __future__ import annotations

import pytest

from dkv.mvcc import errors
from dkv.mvcc.errors import Code


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (errors.EmptyKey, 3, "etcdserver: key is not provided"),
        (errors.KeyNotFound, 3, "etcdserver: key not found"),
        (errors.ValueProvided, 3, "etcdserver: value is provided"),
        (errors.LeaseProvided, 3, "etcdserver: lease is provided"),
        (errors.TooManyOps, 3, "etcdserver: too many operations in txn request"),
        (errors.DuplicateKey, 3, "etcdserver: duplicate key given in txn request"),
        (errors.Compacted, 11, "etcdserver: mvcc: required revision has been compacted"),
        (errors.FutureRevision, 11, "etcdserver: mvcc: required revision is a future revision"),
        (errors.NoSpace, 8, "etcdserver: mvcc: database space exceeded"),
        (errors.LeaseNotFound, 5, "etcdserver: requested lease not found"),
        (errors.LeaseExists, 9, "etcdserver: lease already exists"),
        (errors.MemberNotFound, 5, "etcdserver: member not found"),
        (errors.LearnerNotReady, 9, "etcdserver: can only promote a learner member which is in sync with leader"),
        (errors.RequestTooLarge, 3, "etcdserver: request is too large"),
        (errors.NoLeader, 14, "etcdserver: no leader"),
        (errors.Timeout, 14, "etcdserver: request timed out"),
        (errors.PermissionDenied, 7, "etcdserver: permission denied"),
        (errors.InvalidAuthToken, 16, "etcdserver: invalid auth token"),
        (errors.Corrupt, 15, "etcdserver: corrupt cluster"),
    ],
)
def test_etcds_codes_and_messages(error, code: int, message: str) -> None:
    raised = error()
    assert (raised.code, raised.message, str(raised)) == (code, message, message)


def all_errors() -> list[type[errors.EtcdError]]:
    return errors.EtcdError.__subclasses__()


def test_every_error_is_etcds_kind() -> None:
    found = all_errors()
    assert len(found) >= 50
    for error in found:
        assert error.message.startswith("etcdserver: ") and isinstance(error.code, Code)
    assert len({error.message for error in found}) == len(found)


def test_codes_are_grpc_numbers() -> None:
    assert (Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.OUT_OF_RANGE, Code.UNAVAILABLE) == (3, 5, 11, 14)
