# test-case-name: tests.test_rest
"""The node as the API layers see it: put, get, delete, status.

Both the REST and the gRPC API call only this. It validates what every API
must validate (key and value sizes), encodes commands, and asks the
replication service for writes and linearizable read barriers.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from dkv.commands import encode_delete, encode_put
from dkv.errors import InvalidArgument, KeyNotFound, TooLarge
from dkv.replication import ReplicationService
from dkv.storage import NodeStore


@attrs.frozen
class Limits:
    max_key_bytes: int = 4096
    #: The largest REST body (and gRPC message) accepted.
    max_body_bytes: int = 1536 * 1024


@attrs.define
class Node:
    replication: ReplicationService
    store: NodeStore
    limits: Limits = Limits()

    def check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidArgument("key must not be empty")
        if len(key) > self.limits.max_key_bytes:
            raise TooLarge(f"key is {len(key)} bytes; the limit is {self.limits.max_key_bytes}")

    def put(self, key: bytes, value: bytes) -> Deferred[None]:
        """Fires once the write is committed and applied on this node."""
        try:
            self.check_key(key)
            if len(value) > self.limits.max_body_bytes:
                raise TooLarge(f"value is {len(value)} bytes; the limit is {self.limits.max_body_bytes}")
        except (InvalidArgument, TooLarge) as e:
            return fail(e)
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode_put(rid, key, value))

    def delete(self, key: bytes) -> Deferred[None]:
        try:
            self.check_key(key)
        except (InvalidArgument, TooLarge) as e:
            return fail(e)
        rid = self.replication.next_request_id()
        return self.replication.propose(rid, encode_delete(rid, key))

    def get(self, key: bytes, linearizable: bool = True) -> Deferred[bytes]:
        """The value of key; KeyNotFound if absent. A linearizable read waits
        for a ReadIndex barrier; a serializable one reads local state now."""
        try:
            self.check_key(key)
        except (InvalidArgument, TooLarge) as e:
            return fail(e)
        if not linearizable:
            return self._read(key)
        d = self.replication.read_barrier()
        d.addCallback(lambda _: self._read(key))
        return d

    def _read(self, key: bytes) -> Deferred[bytes]:
        value = self.store.get(key)
        if value is None:
            return fail(KeyNotFound())
        return succeed(value)

    def status(self) -> dict[str, Any]:
        st = self.replication.status()
        return {
            "id": st.id,
            "role": st.role.value,
            "term": st.term,
            "leader_id": st.leader or "",
            "commit_index": st.commit,
            "applied_index": self.replication.applied,
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
