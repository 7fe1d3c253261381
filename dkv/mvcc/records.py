# test-case-name: tests.mvcc.test_keys
"""The values of the store's tables.

A ``KeyState`` says where one version of a key is and what it is without its
value: the live and index tables hold it (41 bytes, ``encode_state``); the
history table holds the full ``mvccpb.KeyValue`` of every change, a delete's
with only ``key`` and ``mod_revision`` set (``create_revision`` 0 marks it,
as etcd's events do).
"""

from __future__ import annotations

import struct

import attrs

from dkv.pb.etcd_kv_pb2 import KeyValue

# tombstone flag, mod_revision, sub, create_revision, version, lease
_STATE = struct.Struct(">Bqqqqq")


@attrs.frozen
class KeyState:
    """One version of a key: its revision (``mod_revision``, ``sub``) -- the
    history table key of its record -- and its metadata."""

    mod_revision: int
    sub: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0
    tombstone: bool = False

    def key_value(self, key: bytes) -> KeyValue:
        """The KeyValue of this version without its value (keys_only)."""
        return KeyValue(
            key=key,
            create_revision=self.create_revision,
            mod_revision=self.mod_revision,
            version=self.version,
            lease=self.lease,
        )


def encode_state(state: KeyState) -> bytes:
    return _STATE.pack(
        state.tombstone, state.mod_revision, state.sub, state.create_revision, state.version, state.lease
    )


def encode_live(mod_revision: int, sub: int, create_revision: int, version: int, lease: int) -> bytes:
    """``encode_state`` of a version that is not a tombstone, from its fields
    (a write makes one per change: no ``KeyState`` is built for it)."""
    return _STATE.pack(False, mod_revision, sub, create_revision, version, lease)


def decode_state(data: bytes) -> KeyState:
    tombstone, mod_revision, sub, create_revision, version, lease = unpack_state(data)
    return KeyState(mod_revision, sub, create_revision, version, lease, bool(tombstone))


#: ``encode_state``'s fields as a tuple, in its order (tombstone flag,
#: mod_revision, sub, create_revision, version, lease): what a write needs of
#: the version before, without a ``KeyState``.
unpack_state = _STATE.unpack


def is_tombstone(record: KeyValue) -> bool:
    """A history record of a delete."""
    return record.create_revision == 0
