"""apply_entries is deterministic and skips what is not a command."""

from __future__ import annotations

from dkv.commands import RequestId, decode, encode_delete, encode_put
from dkv.raft.messages import Entry, EntryKind
from dkv.statemachine import apply_entries
from dkv.storage.memory import MemoryStore


def test_commands_round_trip() -> None:
    cmd = decode(encode_put(RequestId(1, 2), b"k", b"v"))
    assert (cmd.origin, cmd.seq, cmd.put.key, cmd.put.value) == (1, 2, b"k", b"v")
    cmd = decode(encode_delete(RequestId(3, 4), b"k"))
    assert cmd.WhichOneof("op") == "delete" and cmd.delete.key == b"k"


def test_apply_in_order_and_skip_non_commands() -> None:
    entries = [
        Entry(1, 1, EntryKind.CONFIG, b"whatever"),
        Entry(2, 2, EntryKind.NORMAL, b""),
        Entry(3, 2, EntryKind.NORMAL, encode_put(RequestId(9, 1), b"k", b"1")),
        Entry(4, 2, EntryKind.NORMAL, b"\xff\xff not a command"),
        Entry(5, 2, EntryKind.NORMAL, encode_put(RequestId(9, 2), b"k", b"2")),
        Entry(6, 2, EntryKind.NORMAL, encode_delete(RequestId(8, 1), b"j")),
    ]
    a, b = MemoryStore(), MemoryStore()
    b.kv[b"j"] = b"x"
    a.kv[b"j"] = b"x"
    ids = apply_entries(a, entries)
    assert apply_entries(b, entries) == ids
    assert ids == [RequestId(9, 1), RequestId(9, 2), RequestId(8, 1)]
    assert a.kv == b.kv == {b"k": b"2"}
