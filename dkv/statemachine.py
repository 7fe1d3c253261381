# test-case-name: tests.test_statemachine
"""The key-value state machine: what committed entries do to the state.

Applying is deterministic: the same entries give the same operations on
every node. It happens in two steps:

1. ``decode_entries`` turns committed entries into operations (and the ids
   of the requests they answer) as soon as the driver knows they are
   committed. The operations go into the ``Overlay``, an in-memory layer
   over the store that reads consult first, and the clients are answered:
   a committed entry is already on a majority's disk, so no local fsync
   stands between commit and answer (etcd answers the same way).
2. The same operations are written to the store in the next durable
   transaction, together with the applied index, so the stored state and
   applied index always agree; then the overlay forgets them. After a crash
   the node re-applies from its applied index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from dkv.commands import RequestId, decode
from dkv.raft.messages import Entry, EntryKind

#: (key, value) for a put, (key, None) for a delete.
Op = tuple[bytes, bytes | None]


class KVWriter(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


@attrs.frozen
class Applied:
    """The effect of committed entries up to and including ``index``."""

    index: int
    ops: tuple[Op, ...] = ()


def decode_entries(entries: Iterable[Entry]) -> tuple[Applied, list[RequestId]]:
    """The operations of committed entries, in order, and the request ids
    they answer. CONFIG entries and no-ops (empty data) change no key; an
    entry whose data cannot be decoded (a bug on the proposing side) is
    skipped on every node alike, so all states stay identical.
    Precondition: entries is not empty and contiguous."""
    ops: list[Op] = []
    ids: list[RequestId] = []
    last = 0
    for entry in entries:
        last = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            continue
        try:
            cmd = decode(entry.data)
        except Exception:  # noqa: BLE001 - deterministic skip, see docstring
            continue
        op = cmd.WhichOneof("op")
        if op == "put":
            ops.append((cmd.put.key, cmd.put.value))
        elif op == "delete":
            ops.append((cmd.delete.key, None))
        else:
            continue
        ids.append(RequestId(cmd.origin, cmd.seq))
    return Applied(last, tuple(ops)), ids


def write_ops(writer: KVWriter, ops: Iterable[Op]) -> None:
    for key, value in ops:
        if value is None:
            writer.delete(key)
        else:
            writer.put(key, value)


class Overlay:
    """Committed operations not yet in the store, newest per key. Reads look
    here first; ``stored(index)`` forgets what a durable write now holds."""

    def __init__(self) -> None:
        self._data: dict[bytes, tuple[int, bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def add(self, applied: Applied) -> None:
        for key, value in applied.ops:
            self._data[key] = (applied.index, value)

    def get(self, key: bytes) -> tuple[bool, bytes | None]:
        """(True, value or None for deleted) if the overlay knows key."""
        hit = self._data.get(key)
        return (False, None) if hit is None else (True, hit[1])

    def stored(self, index: int) -> None:
        if self._data:
            self._data = {k: v for k, v in self._data.items() if v[0] > index}

    def clear(self) -> None:
        self._data.clear()
