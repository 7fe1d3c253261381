# test-case-name: tests.test_storage
"""An in-memory ``NodeStore`` for tests: same contract, no disk."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from dkv.commands import RequestId
from dkv.raft.membership import Membership
from dkv.raft.messages import Entry, HardState
from dkv.statemachine import apply_entries
from dkv.storage import PersistentState, WriteBatch, bootstrap_state


class MemoryStore:
    def __init__(self) -> None:
        self.cluster_id = ""
        self.hard_state = HardState()
        self.log: dict[int, Entry] = {}
        self.kv: dict[bytes, bytes] = {}
        self.applied = 0
        self.writes = 0

    def load(self) -> PersistentState | None:
        if not self.cluster_id:
            return None
        return PersistentState(
            cluster_id=self.cluster_id,
            hard_state=self.hard_state,
            entries=tuple(self.log[i] for i in sorted(self.log)),
            applied=self.applied,
        )

    def bootstrap(self, cluster_id: str, membership: Membership) -> PersistentState:
        state = bootstrap_state(cluster_id, membership)
        self.cluster_id = cluster_id
        self.hard_state = state.hard_state
        self.log = {e.index: e for e in state.entries}
        return state

    def write(self, batch: WriteBatch) -> Deferred[list[RequestId]]:
        self.writes += 1
        if batch.hard_state is not None:
            self.hard_state = batch.hard_state
        if batch.entries:
            first = batch.entries[0].index
            for i in [i for i in self.log if i >= first]:
                del self.log[i]
            self.log.update((e.index, e) for e in batch.entries)
        ids = apply_entries(self, batch.apply)
        if batch.apply:
            self.applied = batch.apply[-1].index
        return succeed(ids)

    def put(self, key: bytes, value: bytes) -> None:
        self.kv[key] = value

    def delete(self, key: bytes) -> None:
        self.kv.pop(key, None)

    def get(self, key: bytes) -> bytes | None:
        return self.kv.get(key)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def close_now(self) -> None:
        pass
