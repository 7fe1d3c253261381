"""decode_entries is deterministic and skips what is not a command; the
overlay answers reads until the store holds the operations."""

from __future__ import annotations

from dkv.commands import RequestId, decode, encode_delete, encode_put
from dkv.raft.messages import Entry, EntryKind
from dkv.statemachine import Applied, Overlay, decode_entries, write_ops
from dkv.storage.memory import MemoryStore


def test_commands_round_trip() -> None:
    cmd = decode(encode_put(RequestId(1, 2), b"k", b"v"))
    assert (cmd.origin, cmd.seq, cmd.put.key, cmd.put.value) == (1, 2, b"k", b"v")
    cmd = decode(encode_delete(RequestId(3, 4), b"k"))
    assert cmd.WhichOneof("op") == "delete" and cmd.delete.key == b"k"


ENTRIES = [
    Entry(1, 1, EntryKind.CONFIG, b"whatever"),
    Entry(2, 2, EntryKind.NORMAL, b""),
    Entry(3, 2, EntryKind.NORMAL, encode_put(RequestId(9, 1), b"k", b"1")),
    Entry(4, 2, EntryKind.NORMAL, b"\xff\xff not a command"),
    Entry(5, 2, EntryKind.NORMAL, encode_put(RequestId(9, 2), b"k", b"2")),
    Entry(6, 2, EntryKind.NORMAL, encode_delete(RequestId(8, 1), b"j")),
]


def test_decode_in_order_and_skip_non_commands() -> None:
    applied, ids = decode_entries(ENTRIES)
    assert decode_entries(ENTRIES) == (applied, ids)  # deterministic
    assert ids == [RequestId(9, 1), RequestId(9, 2), RequestId(8, 1)]
    assert applied == Applied(6, ((b"k", b"1"), (b"k", b"2"), (b"j", None)))
    store = MemoryStore()
    store.kv[b"j"] = b"x"
    write_ops(store, applied.ops)
    assert store.kv == {b"k": b"2"}


def test_overlay_shadows_the_store_until_stored() -> None:
    overlay = Overlay()
    overlay.add(Applied(5, ((b"a", b"1"), (b"b", None))))
    overlay.add(Applied(7, ((b"a", b"2"),)))
    assert overlay.get(b"a") == (True, b"2")
    assert overlay.get(b"b") == (True, None)  # deleted, whatever the store says
    assert overlay.get(b"c") == (False, None)
    overlay.stored(5)  # the batch up to 5 is durable; 7 is not
    assert overlay.get(b"a") == (True, b"2") and overlay.get(b"b") == (False, None)
    overlay.stored(7)
    assert len(overlay) == 0
