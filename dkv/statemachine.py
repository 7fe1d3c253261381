# test-case-name: tests.test_statemachine
"""Applying committed entries to the key-value state.

Apply is deterministic: the same entries applied to the same state give the
same state on every node. It runs inside the storage's write transaction, so
the state and the applied index move together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dkv.commands import RequestId, decode
from dkv.raft.messages import Entry, EntryKind


class KVWriter(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


def apply_entries(writer: KVWriter, entries: Iterable[Entry]) -> list[RequestId]:
    """Apply NORMAL entries in order; return the request ids applied.

    CONFIG entries and no-ops (empty data) change no key. An entry whose data
    cannot be decoded is a bug on the proposing side; it is skipped on every
    node alike, so all states stay identical."""
    applied: list[RequestId] = []
    for entry in entries:
        if entry.kind != EntryKind.NORMAL or not entry.data:
            continue
        try:
            cmd = decode(entry.data)
        except Exception:  # noqa: BLE001 - deterministic skip, see docstring
            continue
        op = cmd.WhichOneof("op")
        if op == "put":
            writer.put(cmd.put.key, cmd.put.value)
        elif op == "delete":
            writer.delete(cmd.delete.key)
        applied.append(RequestId(cmd.origin, cmd.seq))
    return applied
