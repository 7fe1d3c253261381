# test-case-name: tests.mvcc.test_store,tests.mvcc.test_leases
"""The store's leases: which leases exist, their granted TTLs, their keys.

A ``Leases`` answers whether a lease exists (a put with an unknown lease is
refused with LeaseNotFound, as etcd) and hears which keys attach to and
detach from which lease, in the apply step that changes them, so it keeps
its key sets in the same tables. It must be deterministic: its answers may
depend only on the replicated state.

``TableLeases`` is the real one, in two tables of the state (so leases
survive a restart and ride in snapshots like the ``mvcc.*`` tables):

``lease.leases`` -- key: the lease id (i64, big-endian); value: the granted
    TTL in seconds (i64).
``lease.keys`` -- key: the lease id (i64) + the user key; value: empty.

Nothing here knows time: when a lease expires is the leader's lessor's
business (``dkv.lessor``), which proposes a revoke through the log.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from dkv.mvcc import errors
from dkv.mvcc.layout import LEASE_KEYS, LEASES

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; the store needs only the protocols
    from dkv.storage.tables import Tables, WritableTables

_I64 = struct.Struct(">q")


class Leases(Protocol):
    def exists(self, lease: int) -> bool:
        """Whether lease (never 0) is granted and not revoked."""

    def attach(self, lease: int, key: bytes) -> None:
        """key now carries lease (never 0)."""

    def detach(self, lease: int, key: bytes) -> None:
        """key no longer carries lease (never 0): overwritten with another
        lease or none, or deleted."""


class NoLeases:
    """Every lease id is accepted and stored as given (stores that serve
    no lease API: the store's own tests)."""

    def exists(self, lease: int) -> bool:
        return True

    def attach(self, lease: int, key: bytes) -> None:
        pass

    def detach(self, lease: int, key: bytes) -> None:
        pass


class LeaseReader:
    """The leases as ``tables`` (a read-only view) holds them."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    def exists(self, lease: int) -> bool:
        return self._tables.get(LEASES, _I64.pack(lease)) is not None

    def granted_ttl(self, lease: int) -> int | None:
        """The TTL lease was granted with, or None if it does not exist."""
        data = self._tables.get(LEASES, _I64.pack(lease))
        return None if data is None else _I64.unpack(data)[0]

    def keys(self, lease: int) -> list[bytes]:
        """The keys attached to lease, in key order."""
        prefix = _I64.pack(lease)
        return [k[len(prefix) :] for k, _ in self._tables.scan(LEASE_KEYS, prefix, _after(prefix))]

    def all(self) -> Iterator[tuple[int, int]]:
        """(id, granted TTL) of every lease, by id."""
        for k, v in self._tables.scan(LEASES):
            yield _I64.unpack(k)[0], _I64.unpack(v)[0]


class TableLeases(LeaseReader):
    """``Leases`` over writable tables, plus grant and forget (the revoke's
    key deletes go through the store: see ``dkv.mvcc.lease_ops``)."""

    def __init__(self, tables: WritableTables) -> None:
        super().__init__(tables)
        self._writable = tables

    def attach(self, lease: int, key: bytes) -> None:
        self._writable.put(LEASE_KEYS, _I64.pack(lease) + key, b"")

    def detach(self, lease: int, key: bytes) -> None:
        self._writable.delete(LEASE_KEYS, _I64.pack(lease) + key)

    def grant(self, lease: int, ttl: int) -> None:
        """Record lease (not 0) with ttl. Raises LeaseExists."""
        if self.exists(lease):
            raise errors.LeaseExists()
        self._writable.put(LEASES, _I64.pack(lease), _I64.pack(ttl))

    def forget(self, lease: int) -> None:
        """Drop lease and whatever key records it still has."""
        for key in self.keys(lease):
            self.detach(lease, key)
        self._writable.delete(LEASES, _I64.pack(lease))


def _after(prefix: bytes) -> bytes | None:
    """The first byte string above every string that starts with prefix."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))
