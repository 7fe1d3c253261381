# test-case-name: tests.test_hostile_peer,tests.test_peer_transport
"""The native peer protocol's framing: length-prefixed, typed frames.

A frame is a 4-byte big-endian length, a 1-byte kind and the body; the
length counts the kind byte and the body, so it is at least 1. Kinds:
``HELLO`` (a ``dkv.raft.v0.PeerHello``), ``BATCH`` (a ``dkv.raft.v0.Batch``),
``PING`` and ``PONG`` (no body), and on a snapshot transfer's own
connection ``SNAPSHOT`` (a ``SnapshotChunk``, dialler to listener) and
``ACK`` (a ``SnapshotAck``, back). A length above the reader's bound, a zero
length or an unknown kind is a ``FrameError``: the connection cannot be
trusted any further and is dropped by its owner.
"""

from __future__ import annotations

import struct

__all__ = [
    "ACK", "BATCH", "HELLO", "KINDS", "MAX_FRAME_BYTES", "PING", "PONG", "SNAPSHOT", "FrameError", "FrameReader",
    "frame",
]  # fmt: skip

HELLO, BATCH, PING, PONG, SNAPSHOT, ACK = b"H", b"B", b"P", b"Q", b"S", b"A"
KINDS = frozenset((HELLO, BATCH, PING, PONG, SNAPSHOT, ACK))
#: The largest frame a node accepts (as the gRPC transport's largest message).
MAX_FRAME_BYTES = 64 << 20
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """The peer sent something that is not a frame of this protocol."""


def frame(kind: bytes, body: bytes = b"") -> bytes:
    """One frame of kind carrying body."""
    return _HEADER.pack(len(body) + 1) + kind + body


class FrameReader:
    """Cuts a byte stream into (kind, body) frames.

    ``feed`` returns every frame completed by the new bytes, in order, and
    keeps the rest; it raises FrameError as soon as a header is bad (before
    the body of an oversize frame is buffered)."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buffer
        buf += data
        out: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 5:
            (length,) = _HEADER.unpack_from(buf, pos)
            if length == 0 or length > self.max_frame:
                raise FrameError(f"a frame length of {length} bytes (the bound is {self.max_frame})")
            kind = bytes(buf[pos + 4 : pos + 5])
            if kind not in KINDS:
                raise FrameError(f"an unknown frame kind {kind!r}")
            if end - pos < 4 + length:
                break
            out.append((kind, bytes(buf[pos + 5 : pos + 4 + length])))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return out


def no_delay(transport: object) -> None:
    """Send small frames at once (TCP_NODELAY): a Raft round is a few small
    frames each way, and Nagle's algorithm would hold one back until the
    peer's delayed ACK (~40 ms). Through TLS the wrapper passes the call to
    the TCP transport; a transport without the option (tests) is left as it is."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)
