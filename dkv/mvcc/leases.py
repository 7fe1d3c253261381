# test-case-name: tests.mvcc.test_store
"""The store's hook for leases (the lease issue fills it in).

A ``Leases`` answers whether a lease exists (a put with an unknown lease is
refused with LeaseNotFound, as etcd) and hears which keys attach to and
detach from which lease, in the apply step that changes them, so a lessor
can keep its key sets in the same tables. It must be deterministic: its
answers may depend only on the replicated state.
"""

from __future__ import annotations

from typing import Protocol


class Leases(Protocol):
    def exists(self, lease: int) -> bool:
        """Whether lease (never 0) is granted and not revoked."""

    def attach(self, lease: int, key: bytes) -> None:
        """key now carries lease (never 0)."""

    def detach(self, lease: int, key: bytes) -> None:
        """key no longer carries lease (never 0): overwritten with another
        lease or none, or deleted."""


class NoLeases:
    """Until leases exist: every lease id is accepted and stored as given."""

    def exists(self, lease: int) -> bool:
        return True

    def attach(self, lease: int, key: bytes) -> None:
        pass

    def detach(self, lease: int, key: bytes) -> None:
        pass
